import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COPY_LIMITS, hostManifest, readHostFile, removeBack, writeBack } from '../../src/volume/host-tree.js';

// The host side of share mode "copy": what is read from a volume source and what the guest may write back.

function scratch(): string {
  return mkdtempSync(join(tmpdir(), 'pv-host-tree-'));
}

test('a manifest lists directories, files and links without following links', async () => {
  const dir = scratch();
  try {
    mkdirSync(join(dir, 'vol', '..2026_12_01'), { recursive: true });
    writeFileSync(join(dir, 'vol', '..2026_12_01', 'key'), 'v1', { mode: 0o400 });
    symlinkSync('..2026_12_01', join(dir, 'vol', '..data'));
    symlinkSync('..data/key', join(dir, 'vol', 'key'));
    symlinkSync('/etc', join(dir, 'vol', 'out'));
    const m = await hostManifest(join(dir, 'vol'));
    assert.deepEqual([...m.keys()], ['', '..2026_12_01', '..2026_12_01/key', '..data', 'key', 'out']);
    assert.equal(m.get('..2026_12_01/key')!.mode, 0o400);
    assert.equal(Buffer.from(m.get('out')!.data!).toString(), '/etc');
    assert.equal(m.get('out')!.kind, 'symlink');
    // Reading through a link is refused: only the link itself is copied.
    assert.equal(await readHostFile(join(dir, 'vol'), 'out'), undefined);
    assert.equal(Buffer.from((await readHostFile(join(dir, 'vol'), '..2026_12_01/key'))!).toString(), 'v1');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a volume over the bounds is refused, not cut short', async () => {
  const dir = scratch();
  try {
    writeFileSync(join(dir, 'big'), Buffer.alloc(COPY_LIMITS.fileBytes + 1));
    await assert.rejects(hostManifest(dir), /more than a copied volume file may have/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('write-back never goes through a link, even one the volume already holds', async () => {
  const dir = scratch();
  try {
    const vol = join(dir, 'vol');
    const outside = join(dir, 'outside');
    mkdirSync(vol);
    mkdirSync(outside);
    symlinkSync(outside, join(vol, 'link'));
    await assert.rejects(writeBack(vol, { path: 'link/x', kind: 'file', mode: 0o644, data: Buffer.from('no') }), /not writing through it/);
    assert.equal(existsSync(join(outside, 'x')), false);
    // A file written over a link replaces the link, it does not write where it points.
    writeFileSync(join(outside, 'target'), 'keep');
    symlinkSync(join(outside, 'target'), join(vol, 'f'));
    await writeBack(vol, { path: 'f', kind: 'file', mode: 0o4755, data: Buffer.from('new') });
    assert.equal(readFileSync(join(outside, 'target'), 'utf8'), 'keep');
    assert.equal(readFileSync(join(vol, 'f'), 'utf8'), 'new');
    assert.equal(lstatSync(join(vol, 'f')).mode & 0o7777, 0o755, 'no setuid from the guest');
    // Removal does not follow a link either.
    await removeBack(vol, 'link/target');
    assert.equal(existsSync(join(outside, 'target')), true);
    await removeBack(vol, 'link');
    assert.equal(existsSync(outside), true);
    assert.equal(existsSync(join(vol, 'link')), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a single-file volume (the termination log) is rewritten in place', async () => {
  const dir = scratch();
  try {
    const file = join(dir, 'termination-log');
    writeFileSync(file, '');
    const ino = lstatSync(file).ino;
    await writeBack(file, { path: '', kind: 'file', mode: 0o644, data: Buffer.from('finished\n') });
    assert.equal(readFileSync(file, 'utf8'), 'finished\n');
    assert.equal(lstatSync(file).ino, ino);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
