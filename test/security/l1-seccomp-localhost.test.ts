import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadContainerSeccomp } from '../../src/pod/seccomp.js';
import { containerConfig } from '../helpers/pod-records.js';

/**
 * L1 (security review 2026-12-01): a Localhost seccomp profile path could
 * name any root-readable file; the JSON error echoed its first bytes, and
 * stat-then-read let a swap defeat the size cap. Errors now carry no file
 * bytes, a symlink is not followed, and the read is bounded on one descriptor.
 */
function localhost(file: string) {
  const c = containerConfig();
  c.security.seccomp = { type: 'Localhost', localhostRef: file };
  return c;
}

test('L1: a Localhost profile that is not JSON yields an error without the file\'s bytes', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pv-sec-l1-'));
  try {
    const secret = join(dir, 'shadow');
    await writeFile(secret, 'root:$y$j9T$SECRETHASH:19000:0:99999:7:::\n');
    await assert.rejects(loadContainerSeccomp(localhost(secret)), (e: Error & { code?: string }) =>
      e.code === 'INVALID_ARGUMENT' && !/root|SECRET|\$y/.test(e.message));
    const link = join(dir, 'profile.json');
    await writeFile(join(dir, 'real.json'), '{"defaultAction":"SCMP_ACT_ALLOW"}');
    await symlink(secret, link);
    await assert.rejects(loadContainerSeccomp(localhost(link)), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && /symlink/.test(e.message));
    assert.equal((await loadContainerSeccomp(localhost(join(dir, 'real.json')))).kind, 'profile');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
