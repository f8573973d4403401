import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { grantPathsTo } from '../../src/vm/file-grant.js';

/**
 * The descriptor holder (src/vm/file-grant.ts) with real processes: a process of the VM's uid
 * reaches the handed-over file, directory and socket through `/proc/<holder>/fd/<n>` and none
 * of them by their paths under a 0700 root directory; what such a uid could not use is
 * refused before any holder starts. Needs root (it runs processes as another uid).
 */
const skip = process.getuid?.() !== 0 ? 'needs root: it starts processes as another uid' : undefined;
const who = { uid: 1_165_533, gid: 1_165_533 };

describe('descriptor grants to a QEMU uid', { skip }, () => {
  let dir: string;
  let server: Server;
  const asVm = (cmd: string) => spawnSync('sh', ['-c', cmd], { uid: who.uid, gid: who.gid, encoding: 'utf8', timeout: 30_000 });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pv-grant-')); // 0700 root
    writeFileSync(join(dir, 'kernel'), 'kernel-bytes', { mode: 0o644 });
    writeFileSync(join(dir, 'secret'), 'root-only', { mode: 0o600 });
    mkdirSync(join(dir, 'q'), { mode: 0o700 });
    chownSync(join(dir, 'q'), who.uid, who.gid);
    mkdirSync(join(dir, 'roots'), { mode: 0o700 });
    server = createServer((c) => c.end('hello from the socket\n'));
    await new Promise<void>((r) => server.listen(join(dir, 'v.sock'), r));
    chownSync(join(dir, 'v.sock'), who.uid, who.gid);
  });

  after(async () => {
    await new Promise((r) => server?.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  test('the file, directory and socket are reachable through the holder only', async () => {
    const g = await grantPathsTo(who, [
      { path: join(dir, 'kernel'), kind: 'read' }, { path: join(dir, 'q'), kind: 'dir' }, { path: join(dir, 'v.sock'), kind: 'socket' },
    ]);
    try {
      const [file, qdir, sock] = g.filenames as [string, string, string];
      assert.match(file, /^\/proc\/\d+\/fd\/3$/);
      assert.equal(asVm(`cat ${file}`).stdout, 'kernel-bytes');
      assert.equal(asVm(`echo made > ${qdir}/qmp.sock && cat ${join(dir, 'q', 'qmp.sock')}`).status, 1, 'the real path stays closed');
      assert.equal(spawnSync('cat', [join(dir, 'q', 'qmp.sock')], { encoding: 'utf8' }).stdout, 'made\n', 'it was created in q/');
      const py = `import socket; s = socket.socket(socket.AF_UNIX); s.connect(${JSON.stringify(sock)}); print(s.recv(100).decode(), end='')`;
      // Not spawnSync: the socket's server is this process's event loop.
      const got = await promisify(execFile)('python3', ['-c', py], { uid: who.uid, gid: who.gid, encoding: 'utf8', timeout: 30_000 });
      assert.equal(got.stdout, 'hello from the socket\n');
      const denied = asVm(`cat ${join(dir, 'kernel')}`);
      assert.notEqual(denied.status, 0);
      assert.match(denied.stderr, /Permission denied/);
    } finally {
      g.done();
    }
  });

  test('what the uid could not use is refused, saying why, and no holder starts', async () => {
    const processesOfUid = () => spawnSync('pgrep', ['-u', String(who.uid)], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
    const before = processesOfUid();
    await assert.rejects(grantPathsTo(who, [{ path: join(dir, 'secret'), kind: 'read' }]), /mode 600\) is not readable by others/);
    await assert.rejects(grantPathsTo(who, [{ path: join(dir, 'roots'), kind: 'dir' }]), /belongs to uid 0, not to the VM's uid 1165533/);
    await assert.rejects(grantPathsTo(who, [{ path: join(dir, 'missing'), kind: 'read' }]), /cannot open .*missing for the VM: ENOENT/);
    assert.deepEqual(processesOfUid(), before, 'no holder started');
  });
});
