import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageService } from '../../src/image/image-service.js';
import { privateDir } from '../../src/util/private-dir.js';

/**
 * L7 (security review 2026-12-01): root, state and images directories got
 * 0700 only when podvisord created them; pre-existing ones kept their mode.
 */
test('L7: state directories get 0700 even when they already exist', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pv-l7-'));
  try {
    const root = join(dir, 'root');
    await mkdir(join(root, 'images', 'unpack'), { recursive: true });
    for (const d of [root, join(root, 'images'), join(root, 'images', 'unpack')]) await chmod(d, 0o755);
    privateDir(root);
    assert.equal((await stat(root)).mode & 0o777, 0o700);
    await new ImageService({ root }).init();
    assert.equal((await stat(join(root, 'images'))).mode & 0o777, 0o700);
    assert.equal((await stat(join(root, 'images', 'unpack'))).mode & 0o777, 0o700);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
