import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack as tarPack } from 'tar-stream';
import { tarOf, type Entry } from '../helpers/tar.js';
import { isPodvisorError } from '../../src/errors.js';
import { sha256Digest } from '../../src/image/digest.js';
import { unpackLayers, UnpackBudget, type LayerSource } from '../../src/image/unpack.js';

const work = mkdtempSync(join(tmpdir(), 'podvisor-unpack-test-'));
after(() => rmSync(work, { recursive: true, force: true }));

function asAsync(data: Buffer): () => AsyncIterable<Uint8Array> {
  return async function* () { yield data; };
}
function layer(data: Buffer, name = 'test layer', diffId?: string): LayerSource {
  return { name, open: asAsync(data), ...(diffId ? { diffId } : {}) };
}

let n = 0;
/** A fresh sandbox: `<box>/root` is the unpack target, `<box>/outside` is where escapes would land. */
function sandbox(): { box: string; root: string; outside: string } {
  const box = join(work, `box${n++}`);
  mkdirSync(join(box, 'root'), { recursive: true });
  mkdirSync(join(box, 'outside'));
  return { box, root: join(box, 'root'), outside: join(box, 'outside') };
}

function assertNothingOutside(box: string): void {
  assert.deepEqual(readdirSync(box).sort(), ['outside', 'root']);
  assert.deepEqual(readdirSync(join(box, 'outside')), []);
}

const mtime = new Date('2021-03-04T05:06:07Z');
const older = new Date('2019-01-01T00:00:00Z');

test('layers apply in order: files, modes, owners, mtimes, links, whiteouts, opaque dirs', async () => {
  const { root } = sandbox();
  const base = await tarOf([
    { name: 'etc/', type: 'directory', mode: 0o755, mtime: older },
    { name: 'etc/passwd', body: 'root:x:0:0::/root:/bin/sh\n', mode: 0o644, mtime },
    { name: 'home/user/', type: 'directory', mode: 0o750, uid: 1000, gid: 1001, mtime },
    { name: 'home/user/secret', body: 'x', mode: 0o600, uid: 1000, gid: 1001, mtime },
    { name: 'bin/tool', body: '#!/bin/sh\n', mode: 0o4755, mtime },
    { name: 'bin/tool-link', type: 'link', linkname: 'bin/tool' },
    { name: 'bin/sh', type: 'symlink', linkname: '/bin/busybox', uid: 5, gid: 6, mtime },
    { name: 'gone/file', body: 'bye' },
    { name: 'opaque/old', body: 'old' },
    { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3 },
    { name: 'run/fifo', type: 'fifo' },
  ]);
  const upper = await tarOf([
    { name: 'gone/.wh.file' },
    { name: 'opaque/new', body: 'new' },
    { name: 'opaque/.wh..wh..opq' },
    { name: './etc/passwd', body: 'changed\n', mode: 0o640, mtime },
  ]);
  const notes = await unpackLayers(root, [layer(gzipSync(base), 'base', sha256Digest(base)), layer(upper, 'upper', sha256Digest(upper))], new UnpackBudget(1 << 20));

  assert.equal(readFileSync(join(root, 'etc/passwd'), 'utf8'), 'changed\n');
  assert.equal(lstatSync(join(root, 'etc/passwd')).mode & 0o7777, 0o640);
  const secret = lstatSync(join(root, 'home/user/secret'));
  assert.deepEqual([secret.uid, secret.gid, secret.mode & 0o7777], [1000, 1001, 0o600]);
  assert.equal(secret.mtime.getTime(), mtime.getTime());
  const home = lstatSync(join(root, 'home/user'));
  assert.deepEqual([home.uid, home.gid, home.mode & 0o7777, home.mtime.getTime()], [1000, 1001, 0o750, mtime.getTime()]);
  assert.equal(lstatSync(join(root, 'etc')).mtime.getTime(), older.getTime(), 'directory mtimes are set after their contents');
  assert.equal(lstatSync(join(root, 'bin/tool')).mode & 0o7777, 0o4755, 'setuid survives chown');
  assert.equal(lstatSync(join(root, 'bin/tool')).ino, lstatSync(join(root, 'bin/tool-link')).ino, 'hard link shares the inode');
  assert.equal(readlinkSync(join(root, 'bin/sh')), '/bin/busybox');
  assert.deepEqual([lstatSync(join(root, 'bin/sh')).uid, lstatSync(join(root, 'bin/sh')).gid], [5, 6]);
  assert.deepEqual(readdirSync(join(root, 'gone')), [], 'whiteout removed the lower file');
  assert.deepEqual(readdirSync(join(root, 'opaque')), ['new'], 'opaque dir keeps only this layer\'s entries');
  assert.deepEqual(readdirSync(join(root, 'dev')), []);
  assert.deepEqual(notes.skipped.sort(), ['dev/null (character-device)', 'run/fifo (fifo)']);
});

test('zstd and uncompressed layers unpack the same as gzip', async () => {
  const tar = await tarOf([{ name: 'hello', body: 'world', mode: 0o644 }]);
  const zst = execFileSync('zstd', ['-q', '-c'], { input: tar });
  for (const data of [tar, zst, gzipSync(tar)]) {
    const { root } = sandbox();
    await unpackLayers(root, [{ name: 'l', open: asAsync(data), diffId: sha256Digest(tar) }], new UnpackBudget(1 << 20));
    assert.equal(readFileSync(join(root, 'hello'), 'utf8'), 'world');
  }
});

test('a layer whose content does not match its diff id is refused', async () => {
  const { root } = sandbox();
  const tar = await tarOf([{ name: 'a', body: 'a' }]);
  await assert.rejects(unpackLayers(root, [layer(tar, 'l', sha256Digest('other'))], new UnpackBudget(1 << 20)),
    (e) => isPodvisorError(e, 'FAILED_PRECONDITION') && /diff|hashes to/.test(e.message));
});

test('malicious layers are refused and nothing lands outside the unpack folder', async (t) => {
  const cases: [string, (outside: string) => Entry[], RegExp][] = [
    ['dot-dot entry', () => [{ name: '../outside/pwned', body: 'x' }], /"\.\." path components/],
    ['dot-dot deep inside', () => [{ name: 'a/b/../../../outside/pwned', body: 'x' }], /"\.\." path components/],
    ['absolute entry name', (o) => [{ name: `${o}/pwned`, body: 'x' }], /absolute paths/],
    ['write through an absolute symlink', (o) => [
      { name: 'evil', type: 'symlink', linkname: o },
      { name: 'evil/pwned', body: 'x' },
    ], /symlink to the absolute path/],
    ['write through a relative symlink that climbs out', () => [
      { name: 'a/up', type: 'symlink', linkname: '../../outside' },
      { name: 'a/up/pwned', body: 'x' },
    ], /leads out of the image root/],
    ['symlink chain out of the root', () => [
      { name: 's1', type: 'symlink', linkname: 's2' },
      { name: 's2', type: 'symlink', linkname: '..' },
      { name: 's1/outside/pwned', body: 'x' },
    ], /leads out of the image root/],
    ['hard link to a path above the root', () => [{ name: 'h', type: 'link', linkname: '../outside/target' }], /outside the image root/],
    ['hard link to an absolute path', (o) => [{ name: 'h', type: 'link', linkname: `${o}/target` }], /outside the image root/],
    ['hard link through a symlinked directory', (o) => [
      { name: 'd', type: 'symlink', linkname: o },
      { name: 'h', type: 'link', linkname: 'd/target' },
    ], /symlink to the absolute path/],
    ['whiteout through a symlink', (o) => [
      { name: 'd', type: 'symlink', linkname: o },
      { name: 'd/.wh.target' },
    ], /symlink to the absolute path/],
  ];
  for (const [label, entries, why] of cases) {
    await t.test(label, async () => {
      const { box, root, outside } = sandbox();
      // something to steal or delete, so a hard link or a whiteout that got out would show
      writeFileSync(join(outside, 'target'), 'keep me');
      const tar = await tarOf(entries(outside));
      await assert.rejects(unpackLayers(root, [layer(tar, label)], new UnpackBudget(1 << 20)),
        (e) => isPodvisorError(e, 'FAILED_PRECONDITION') && why.test(e.message) && e.message.includes(label));
      assert.deepEqual(readdirSync(outside), ['target']);
      assert.equal(readFileSync(join(outside, 'target'), 'utf8'), 'keep me');
      assert.equal(lstatSync(join(outside, 'target')).nlink, 1, 'no hard link to the outside file');
      rmSync(join(outside, 'target'));
      assertNothingOutside(box);
    });
  }
});

test('a file that claims more than the limit is refused before its data is read', async () => {
  const { box, root } = sandbox();
  // a header that says 1 TiB: tar-stream would wait for the bytes; the budget refuses at the header
  const p = tarPack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => chunks.push(c as Buffer));
  const entry = p.entry({ name: 'huge', size: 2 ** 40 });
  entry.write(Buffer.alloc(1024));
  await new Promise((r) => setTimeout(r, 20));
  const data = Buffer.concat(chunks);
  assert.ok(data.length >= 1536, 'header and the first data block were produced');
  await assert.rejects(unpackLayers(root, [layer(data, 'bomb')], new UnpackBudget(1 << 20)),
    (e) => isPodvisorError(e, 'RESOURCE_EXHAUSTED') && e.message.includes('huge') && e.message.includes('limit'));
  assertNothingOutside(box);
  assert.deepEqual(readdirSync(root), []);
});

test('many small entries also hit the limit (tar bomb)', async () => {
  const { root } = sandbox();
  const entries: Entry[] = Array.from({ length: 300 }, (_, i) => ({ name: `f${i}`, body: 'x'.repeat(100) }));
  await assert.rejects(unpackLayers(root, [layer(await tarOf(entries), 'bomb')], new UnpackBudget(64 * 1024)),
    (e) => isPodvisorError(e, 'RESOURCE_EXHAUSTED'));
});

test('huge sparse files made by GNU tar are refused, in both GNU and PAX formats', async (t) => {
  const src = join(work, 'sparse-src');
  mkdirSync(src, { recursive: true });
  execFileSync('truncate', ['-s', '1T', join(src, 'sparse')]);
  writeFileSync(join(src, 'note'), 'sparse test');
  for (const format of ['gnu', 'posix']) {
    await t.test(format, async () => {
      const tar = execFileSync('tar', ['--sparse', `--format=${format}`, '-C', src, '-cf', '-', 'sparse']);
      assert.ok(tar.length < 1 << 20, 'the tarball itself is small');
      const { box, root } = sandbox();
      await assert.rejects(unpackLayers(root, [layer(tar, `sparse-${format}`)], new UnpackBudget(1 << 30)),
        (e) => isPodvisorError(e) && /sparse|unsupported tar entry type|limit/.test(e.message));
      assertNothingOutside(box);
      assert.ok(!readdirSync(root).some((f) => lstatSync(join(root, f)).size > 1 << 20), 'no huge file was written');
    });
  }
});

test('symlinks inside the root are followed for parents; the last component never is', async () => {
  const { box, root } = sandbox();
  const tar = await tarOf([
    { name: 'usr/lib/', type: 'directory', mode: 0o755 },
    { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
    { name: 'lib/libc.so', body: 'libc' },
    { name: 'etc/target', body: 'inside' },
    { name: 'replace-me', type: 'symlink', linkname: 'etc/target' },
    { name: 'replace-me', body: 'a new file, not a write through the link' },
  ]);
  await unpackLayers(root, [layer(tar, 'ok')], new UnpackBudget(1 << 20));
  assert.equal(readFileSync(join(root, 'usr/lib/libc.so'), 'utf8'), 'libc');
  assert.equal(readFileSync(join(root, 'etc/target'), 'utf8'), 'inside');
  assert.ok(lstatSync(join(root, 'replace-me')).isFile());
  assertNothingOutside(box);
});
