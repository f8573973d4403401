import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { writeJsonAtomicSync } from '../../src/util/atomic-file.js';
import { Vm } from '../../src/vm/vm.js';
import { guestProfile, qemuProcessesUsing, scratchRoot } from '../helpers/vm.js';

/**
 * VMs that end by themselves, with real QEMU. QEMU pausing a VM on an error is shown with
 * the one such pause TCG can produce: a disk read error under rerror=stop (blkdebug injects
 * EIO), which stops the VM in state io-error exactly as KVM's internal error does. And the
 * orphan left when podvisord dies between spawning QEMU and QMP answering.
 */

const root = scratchRoot('fatal');

after(() => {
  const stray = qemuProcessesUsing(root.dir);
  for (const pid of stray) process.kill(pid, 'SIGKILL');
  root.remove();
  assert.deepEqual(stray, [], 'no QEMU process may outlive the tests');
});

describe('a VM that QEMU pauses on an error', () => {

  /** A 4 MiB disk whose every read fails with EIO, plugged so that a read error stops the VM. */
  async function plugFailingDisk(vm: Vm, name: string): Promise<void> {
    const disk = join(root.dir, `${name}.img`);
    writeFileSync(disk, '');
    truncateSync(disk, 4 * 1024 * 1024);
    await vm.qmp.execute('blockdev-add', {
      driver: 'blkdebug', 'node-name': `${name}-dbg`,
      image: { driver: 'file', filename: disk }, 'inject-error': [{ event: 'read_aio', errno: 5 }],
    } as never);
    await vm.qmp.execute('blockdev-add', { driver: 'raw', 'node-name': name, file: `${name}-dbg` } as never);
    // The guest kernel reads the partition table as soon as its SCSI driver sees the disk.
    await vm.qmp.execute('device_add', { driver: 'scsi-hd', id: `${name}-dev`, bus: 'scsi0.0', 'scsi-id': 5, lun: 0, drive: name, rerror: 'stop', werror: 'stop' } as never);
  }

  it('ends a running VM, reporting vm-error with the state (what makes a sandbox NOTREADY)', async () => {
    const runDir = join(root.dir, 'running-ioerror');
    const vm = await Vm.launch({ id: 'fatal-running', profile: guestProfile(), runDir });
    const stopped = vm.qmp.waitForEvent('STOP', () => true, 110_000).then(() => performance.now());
    stopped.catch(() => undefined);
    await plugFailingDisk(vm, 'bad1');
    const info = await vm.waitExit();
    const endedAt = performance.now();
    assert.equal(info.reason, 'vm-error');
    assert.match(info.detail, /^QEMU paused the VM on an error \(io-error\)/);
    console.log(`# running VM: ended ${Math.round(endedAt - (await stopped))} ms after QEMU's STOP`);
    assert.deepEqual(qemuProcessesUsing(runDir), []);
    await vm.destroy();
  });

  it('ends the launch at once with the state and QEMU\'s words, leaving nothing', async () => {
    const runDir = join(root.dir, 'ioerror');
    let stoppedAt = 0;
    const t0 = performance.now();
    await assert.rejects(
      Vm.launch({
        id: 'fatal-ioerror', profile: guestProfile(), runDir, readyTimeoutMs: 120_000,
        waitReady: async (vm) => {
          const stop = vm.qmp.waitForEvent('STOP', () => true, 110_000).then(() => (stoppedAt = performance.now()));
          stop.catch(() => undefined);
          await plugFailingDisk(vm, 'bad2');
          await new Promise(() => undefined); // the agent "never answers"
        },
      }),
      (e: Error & { code?: string }) => {
        assert.equal(e.code, 'FAILED_PRECONDITION');
        assert.match(e.message, /^VM fatal-ioerror ended before it was ready: QEMU paused the VM on an error \(io-error\)/);
        return true;
      },
    );
    const failedAt = performance.now();
    console.log(`# io-error: launch failed ${Math.round(failedAt - stoppedAt)} ms after QEMU's STOP (${Math.round(failedAt - t0)} ms after launch)`);
    assert.ok(stoppedAt > 0, 'QEMU did stop the VM');
    assert.deepEqual(qemuProcessesUsing(runDir), [], 'no QEMU left');
    assert.equal(existsSync(runDir), false, 'run directory removed');
  });
});

describe('a QEMU whose launch never finished (podvisord died between spawn and QMP)', () => {
  async function orphan(name: string): Promise<{ runDir: string; pid: number }> {
    const runDir = join(root.dir, name);
    const vm = await Vm.launch({ id: `orphan-${name}`, profile: guestProfile(), runDir });
    vm.detach();
    return { runDir, pid: vm.pid };
  }

  it('is killed at reattach when its record still says launching', async () => {
    const { runDir, pid } = await orphan('launching');
    const record = JSON.parse(readFileSync(join(runDir, 'vm.json'), 'utf8')) as Record<string, unknown>;
    writeJsonAtomicSync(join(runDir, 'vm.json'), { ...record, state: 'launching' });
    await assert.rejects(Vm.reattach(runDir), { code: 'NOT_FOUND', message: new RegExp(`never finished launching .*QEMU pid ${pid} was killed`) });
    assert.deepEqual(qemuProcessesUsing(runDir), []);
  });

  it('is killed at reattach when only its pidfile is there', async () => {
    const { runDir, pid } = await orphan('pidfile');
    rmSync(join(runDir, 'vm.json'));
    await assert.rejects(Vm.reattach(runDir), { code: 'NOT_FOUND', message: new RegExp(`QEMU pid ${pid} was killed`) });
    assert.deepEqual(qemuProcessesUsing(runDir), []);
  });
});
