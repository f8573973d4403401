import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Vm } from '../../src/vm/vm.js';
import { guestProfile, qemuProcessesUsing, scratchRoot } from '../helpers/vm.js';
import { waitFor } from '../helpers/wait.js';

/** The host side of a virtio-fs share: QEMU connects its vhost-user-fs device to a real virtiofsd. */

const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const root = scratchRoot('vfs');
let daemon: ChildProcess | undefined;

async function startVirtiofsd(socket: string, source: string, log: string): Promise<ChildProcess> {
  mkdirSync(source, { recursive: true });
  const out = openSync(log, 'a');
  const child = spawn(VIRTIOFSD, [`--socket-path=${socket}`, '-o', `source=${source}`, '-o', 'cache=none', '-o', 'sandbox=chroot'], { stdio: ['ignore', out, out] });
  closeSync(out);
  // A loaded host can take seconds to start it: wait for the socket (or virtiofsd's exit), then say why if it is missing.
  await waitFor(`virtiofsd to create ${socket}`, () => (existsSync(socket) || child.exitCode !== null ? true : undefined), 60_000, 20).catch(() => undefined);
  assert.ok(existsSync(socket), `virtiofsd did not create ${socket}: ${readFileSync(log, 'utf8')}`);
  return child;
}

describe('shared filesystem device', { skip: !existsSync(VIRTIOFSD) && `${VIRTIOFSD} is not installed` }, () => {
  after(() => {
    daemon?.kill('SIGKILL');
    assert.deepEqual(qemuProcessesUsing(root.dir), []);
    root.remove();
  });

  it('connects the vhost-user-fs device to virtiofsd and runs', async () => {
    const socket = join(root.dir, 'virtiofs.sock');
    const log = join(root.dir, 'virtiofsd.log');
    daemon = await startVirtiofsd(socket, join(root.dir, 'share'), log);
    const vm = await Vm.launch({ id: 'vfs', profile: guestProfile(), runDir: join(root.dir, 'run'), sharedFs: { socket, tag: 'podvisor' } });
    assert.equal(await vm.status(), 'running');
    assert.match(readFileSync(log, 'utf8'), /Received vhost-user socket connection/);
    assert.equal((await vm.stop({ timeoutMs: 5000 })).reason, 'stopped');
    await vm.destroy();
  });

  it('fails clearly when no virtiofsd listens, leaving nothing', async () => {
    const runDir = join(root.dir, 'nodaemon');
    await assert.rejects(
      Vm.launch({ id: 'vfs-none', profile: guestProfile(), runDir, sharedFs: { socket: join(root.dir, 'missing.sock'), tag: 'podvisor' } }),
      { code: 'FAILED_PRECONDITION', message: /QEMU exited during start-up.*missing\.sock/ },
    );
    assert.equal(existsSync(runDir), false);
  });

  it('rejects a tag the guest could not mount', async () => {
    await assert.rejects(
      Vm.launch({ id: 'vfs-tag', profile: guestProfile(), runDir: join(root.dir, 'tag'), sharedFs: { socket: '/x', tag: 'a,b' } }),
      { code: 'INVALID_ARGUMENT', message: /virtio-fs tag/ },
    );
  });
});
