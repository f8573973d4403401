import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isPodvisorError } from '../../src/errors.js';
import { locateGuestImage } from '../../src/vm/guest-image.js';
import { ensureGuestImage } from '../helpers/guest.js';

test('the built image has a raw ELF kernel, an LZ4 initramfs and an erofs system disk, as the manifest says', () => {
  const image = ensureGuestImage();
  assert.deepEqual([...readFileSync(image.kernel).subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
  // LZ4 legacy frame magic, which the kernel's initramfs unpacker reads.
  assert.deepEqual([...readFileSync(image.initrd).subarray(0, 4)], [0x02, 0x21, 0x4c, 0x18]);
  const superblock = readFileSync(image.systemDisk).subarray(1024, 1028);
  assert.equal(superblock.readUInt32LE(0), 0xe0f5e1e2, 'erofs magic at offset 1024');
  assert.match(image.manifest.hash, /^[0-9a-f]{32}$/);
  assert.match(image.manifest.kernelVersion, /-cloud-amd64$/);
  assert.equal(image.manifest.nodeVersion, process.version, 'the guest runs the host daemon\'s node');
});

test('a second build with unchanged inputs is a no-op that keeps the files', () => {
  const image = ensureGuestImage();
  const before = readFileSync(join(image.dir, 'manifest.json'), 'utf8');
  const out = execFileSync(join(process.cwd(), 'hack/build-guest-image'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  assert.equal(out.trim(), image.dir);
  assert.equal(readFileSync(join(image.dir, 'manifest.json'), 'utf8'), before);
});

test('locateGuestImage says how to build a missing or incomplete image', () => {
  const dir = mkdtempSync(join(tmpdir(), 'podvisor-noimage-'));
  try {
    assert.throws(() => locateGuestImage(dir), (e) => isPodvisorError(e, 'FAILED_PRECONDITION') && /run hack\/build-guest-image/.test(e.message));
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ hash: 'x', kernelVersion: 'k', files: {} }));
    assert.throws(() => locateGuestImage(dir), (e) => isPodvisorError(e, 'FAILED_PRECONDITION') && /vmlinux is missing/.test(e.message));
    writeFileSync(join(dir, 'manifest.json'), '{broken');
    assert.throws(() => locateGuestImage(dir), (e) => isPodvisorError(e, 'FAILED_PRECONDITION') && /unreadable/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
