import assert from 'node:assert/strict';
import { createHook } from 'node:async_hooks';
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { QemuUsers } from '../../src/vm/confinement.js';
import { createLibvirtBackend } from '../../src/vm/libvirt/backend.js';
import type { VmBackend } from '../../src/vm/pod-vm.js';
import { isProcessAlive } from '../../src/vm/proc.js';
import { qemuBackend } from '../../src/vm/qemu-backend.js';
import { SCSI_BUS } from '../../src/vm/qemu-args.js';
import { QmpCommandError } from '../../src/vm/qmp-client.js';
import type { QmpVm } from '../../src/vm/qmp-vm.js';
import { libvirtUnavailable, startPrivateLibvirtd, type PrivateLibvirtd } from '../helpers/libvirtd.js';
import { cleanupOnSignal } from '../helpers/signal-cleanup.js';
import { guestProfile, qemuProcessesUsing, scratchRoot, testConfinement } from '../helpers/vm.js';

/**
 * A reattach (podvisord restarted, src/pod/recovery.ts) that fails lets go of everything it took
 * on the host (poll timer, QMP and console sockets, the console log's descriptor, the uid
 * reservation) and leaves the QEMU itself for recovery's killLeftover, against a real confined
 * QEMU, through each backend's reattach (both end in QmpVm.adopt): podvisor's own launcher, and
 * libvirt with a libvirtd of the test's own where it can run.
 */

const root = scratchRoot('reattach-fail');
const ID = 'reattach-fail';

function killStrays(): number[] {
  const stray = qemuProcessesUsing(root.dir);
  for (const pid of stray) process.kill(pid, 'SIGKILL');
  return stray;
}
const dropSignalCleanup = cleanupOnSignal(() => {
  killStrays();
  root.remove();
});

/**
 * Timers and unix sockets made by src/vm/ while it runs, and which of them are still open.
 * Async hooks see unref'd timers too (the VM's poll timer is one), which
 * process.getActiveResourcesInfo() does not list.
 */
function trackVmResources(): { stop(): Promise<{ made: string[]; open: string[] }> } {
  const made = new Map<number, string>();
  const open = new Set<number>();
  const oldLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 60;
  const hook = createHook({
    init(asyncId, type) {
      if (type !== 'Timeout' && type !== 'PIPEWRAP') return;
      const frame = (new Error().stack ?? '').split('\n').find((l) => l.includes('/src/vm/'));
      if (!frame) return;
      made.set(asyncId, `${type} ${frame.trim()}`);
      open.add(asyncId);
    },
    destroy(asyncId) {
      open.delete(asyncId);
    },
  }).enable();
  return {
    async stop() {
      // Destroy hooks run a moment after the close: let them.
      await new Promise((r) => setTimeout(r, 200));
      hook.disable();
      Error.stackTraceLimit = oldLimit;
      return { made: [...made.values()], open: [...open].map((id) => made.get(id)!) };
    },
  };
}

/** Descriptors of this process on files in the run directory (the console log). */
function fdsIn(runDir: string): string[] {
  const found: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(runDir)) found.push(target);
    } catch {
      /* closed while we looked */
    }
  }
  return found;
}

/** A new daemon's uid allocator, seeded from /proc as a first launch would seed it. */
function freshUsers(): QemuUsers {
  const users = new QemuUsers(testConfinement().users.user);
  users.release(users.allocate('someone-else').uid);
  return users;
}

/** Runs a reattach that must fail; returns what it left open. */
async function failedReattach(backend: VmBackend, runDir: string, users: QemuUsers, expected: (e: unknown) => boolean) {
  const tracked = trackVmResources();
  await assert.rejects(backend.reattach(runDir, { users, timeoutMs: 10_000 }), expected);
  const { made, open } = await tracked.stop();
  return { made, open, fds: fdsIn(runDir) };
}

const libvirtSkip = await libvirtUnavailable();

for (const name of ['qemu', 'libvirt'] as const) {
  describe(`a VM reattach that fails (${name} backend)`, { skip: name === 'libvirt' ? libvirtSkip : undefined }, () => {
    const runDir = join(root.dir, name);
    let libvirtd: PrivateLibvirtd | undefined;
    let closeConnection = async (): Promise<void> => {};
    let backend: VmBackend;
    let pid: number;
    let uid: number;
    let disksFile: string;

    before(async () => {
      if (name === 'libvirt') {
        libvirtd = await startPrivateLibvirtd();
        const libvirt = createLibvirtBackend(libvirtd.uri);
        closeConnection = () => libvirt.connection.close();
        backend = libvirt;
      } else {
        backend = qemuBackend;
      }
      const vm = await backend.launch({ id: ID, profile: guestProfile(), runDir, confinement: testConfinement() }) as QmpVm;
      pid = vm.pid;
      assert.ok(vm.uid !== undefined, 'the test QEMU runs as its own uid');
      uid = vm.uid;
      disksFile = vm.paths.disksFile;
      vm.detach();
    });

    after(async () => {
      await backend?.killLeftover(runDir).catch(() => false);
      await closeConnection();
      await libvirtd?.stop();
    });

    it('before the VM object exists (a torn disk record): QMP, console and uid are let go, QEMU left running', async () => {
      const saved = readFileSync(disksFile);
      writeFileSync(disksFile, '[{"torn');
      try {
        const users = freshUsers();
        const left = await failedReattach(backend, runDir, users, (e) => e instanceof SyntaxError);
        assert.ok(left.made.some((r) => r.startsWith('PIPEWRAP')), `the attempt connected QMP and the console: ${left.made.join('; ')}`);
        assert.deepEqual(left.open, [], 'no timer or socket of the attempt stays open');
        assert.deepEqual(left.fds, [], 'no descriptor on the run directory stays open');
        const again = users.allocate(ID);
        assert.equal(again.uid, uid, 'the uid reserved for the VM went back');
        users.release(again.uid);
        assert.ok(isProcessAlive(pid), 'the failed reattach left QEMU to its caller');
      } finally {
        writeFileSync(disksFile, saved);
      }
    });

    it('after the VM object exists (disk reconcile fails): poll timer, QMP, console and uid are let go; killLeftover ends QEMU', async () => {
      // A block node named like podvisor's own disks but held by a device podvisor does not know:
      // reconcile sees a stray disk and cannot remove its node (QEMU: in use).
      const live = await backend.reattach(runDir);
      const qmp = live.qmp.execute.bind(live.qmp) as (command: string, args: Record<string, unknown>) => Promise<unknown>;
      await qmp('blockdev-add', { driver: 'null-co', 'node-name': 'hd5' });
      await qmp('device_add', { driver: 'scsi-hd', id: 'not-podvisors', bus: SCSI_BUS, 'scsi-id': 5, lun: 0, drive: 'hd5' });
      live.detach();

      const users = freshUsers();
      const left = await failedReattach(backend, runDir, users, (e) => e instanceof QmpCommandError && e.command === 'blockdev-del');
      assert.ok(left.made.some((r) => r.startsWith('Timeout') && r.includes('qmp-vm')), `the VM object was built (its poll timer): ${left.made.join('; ')}`);
      assert.deepEqual(left.open, [], 'no timer or socket of the attempt stays open');
      assert.deepEqual(left.fds, [], 'no descriptor on the run directory stays open');
      assert.ok(isProcessAlive(pid), 'the failed reattach left QEMU to its caller');

      // What recovery does next.
      assert.equal(await backend.killLeftover(runDir), true);
      for (let i = 0; i < 200 && isProcessAlive(pid); i++) await new Promise((r) => setTimeout(r, 25));
      assert.equal(isProcessAlive(pid), false, 'killLeftover ended QEMU');
      const again = users.allocate(ID);
      assert.equal(again.uid, uid, 'the uid reserved for the VM went back');
      users.release(again.uid);
    });
  });
}

after(() => {
  const stray = killStrays();
  root.remove();
  dropSignalCleanup();
  assert.deepEqual(stray, [], 'no QEMU process may outlive the tests');
});
