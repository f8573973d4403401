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

describe('a VM that QEMU pauses on an error', () => {
  after(() => {
    const stray = qemuProcessesUsing(root.dir);
    for (const pid of stray) process.kill(pid, 'SIGKILL');
    root.remove();
    assert.deepEqual(stray, [], 'no QEMU process may outlive the tests');
  });

  it('ends the launch at once with the state and QEMU\'s words, leaving nothing', async () => {
    const disk = join(root.dir, 'bad.img');
    writeFileSync(disk, '');
    truncateSync(disk, 4 * 1024 * 1024);
    const runDir = join(root.dir, 'ioerror');
    let stoppedAt = 0;
    const t0 = performance.now();
    await assert.rejects(
      Vm.launch({
        id: 'fatal-ioerror', profile: guestProfile(), runDir, readyTimeoutMs: 120_000,
        // Plug a disk whose every read fails with EIO and which stops the VM on a read error;
        // the guest kernel reads its partition table as soon as its SCSI driver scans.
        waitReady: async (vm) => {
          const stop = vm.qmp.waitForEvent('STOP', () => true, 110_000).then(() => (stoppedAt = performance.now()));
          stop.catch(() => undefined);
          await vm.qmp.execute('blockdev-add', {
            driver: 'blkdebug', 'node-name': 'bad-dbg',
            image: { driver: 'file', filename: disk }, 'inject-error': [{ event: 'read_aio', errno: 5 }],
          } as never);
          await vm.qmp.execute('blockdev-add', { driver: 'raw', 'node-name': 'bad', file: 'bad-dbg' } as never);
          await vm.qmp.execute('device_add', { driver: 'scsi-hd', id: 'bad-dev', bus: 'scsi0.0', 'scsi-id': 5, lun: 0, drive: 'bad', rerror: 'stop', werror: 'stop' } as never);
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
