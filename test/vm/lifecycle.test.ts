import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Vm, type VmExitInfo } from '../../src/vm/vm.js';
import { guestProfile, qemuProcessesUsing, scratchRoot } from '../helpers/vm.js';

/**
 * Boot, stop, crash and reattach against real QEMU. A "boot" here is QEMU up and QMP
 * answering; the guest keeps booting in the background.
 */

const root = scratchRoot('life');
const launched: Vm[] = [];

async function launch(name: string): Promise<Vm> {
  const vm = await Vm.launch({ id: `life-${name}`, profile: guestProfile(), runDir: join(root.dir, name) });
  launched.push(vm);
  return vm;
}

async function exitWithin(vm: Vm, ms: number): Promise<VmExitInfo> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      vm.waitExit(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`VM exit not seen within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

describe('VM lifecycle', () => {
  after(async () => {
    for (const vm of launched) if (vm.state === 'running') await vm.stop({ timeoutMs: 3000 }).catch(() => undefined);
    const stray = qemuProcessesUsing(root.dir);
    for (const pid of stray) process.kill(pid, 'SIGKILL');
    root.remove();
    assert.deepEqual(stray, [], 'no QEMU process may outlive the tests');
  });

  describe('a launched VM', () => {
    let vm: Vm;
    before(async () => {
      vm = await launch('boot');
    });

    it('runs QEMU in its own session with the sandbox id in its name', () => {
      const stat = readFileSync(`/proc/${vm.pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      assert.equal(Number(fields[3]), vm.pid, 'QEMU leads its own session (setsid)');
      const argv = readFileSync(`/proc/${vm.pid}/cmdline`, 'utf8').split('\0');
      assert.ok(argv.includes('life-boot,process=podvisor-life-b,debug-threads=on'), `-name carries the id: ${argv.join(' ')}`);
      assert.equal(readFileSync(`/proc/${vm.pid}/comm`, 'utf8').trim(), 'podvisor-life-b');
    });

    it('answers QMP and has its sockets (0600), pidfile and console log in the run directory', async () => {
      assert.equal(await vm.status(), 'running');
      for (const sock of [vm.paths.qmpSocket, vm.paths.agentSocket]) {
        const st = statSync(sock);
        assert.ok(st.isSocket(), `${sock} is a socket`);
        assert.equal(st.mode & 0o777, 0o600, `${sock} is 0600`);
      }
      assert.equal(statSync(vm.paths.dir).mode & 0o777, 0o700);
      assert.equal(Number(readFileSync(vm.paths.pidFile, 'utf8')), vm.pid);
      assert.ok(existsSync(vm.paths.consoleLog));
    });

    it('has the agent port, SCSI controller and read-only system disk', async () => {
      const blocks = await vm.qmp.execute('query-block');
      const system = blocks.find((b) => b.qdev === 'system-disk');
      assert.ok(system?.inserted, `system disk present: ${JSON.stringify(blocks)}`);
      assert.equal(system.inserted.ro, true);
    });

    it('is found again after the daemon lets go of it (reattach)', async () => {
      const pid = vm.pid;
      vm.detach();
      assert.ok(qemuProcessesUsing(vm.paths.dir).includes(pid), 'detaching leaves QEMU running');
      vm = await Vm.reattach(vm.paths.dir);
      launched.push(vm);
      assert.equal(vm.pid, pid);
      assert.equal(await vm.status(), 'running');
      assert.deepEqual(await vm.qmp.execute('query-status'), { status: 'running', running: true, singlestep: false });
    });

    it('stops with QMP quit, removes sockets and pidfile, keeps the logs', async () => {
      const exits: VmExitInfo[] = [];
      vm.on('exit', (info) => exits.push(info));
      const info = await vm.stop({ timeoutMs: 5000 });
      assert.equal(info.reason, 'stopped');
      assert.equal(exits.length, 1, 'exit is emitted once');
      assert.deepEqual(qemuProcessesUsing(vm.paths.dir), []);
      assert.deepEqual(readdirSync(vm.paths.dir).sort(), ['console.log', 'qemu.log']);
      assert.equal((await vm.stop()).reason, 'stopped', 'stop is idempotent');
      await assert.rejects(vm.hotplugDisk({ id: 'late', path: vm.paths.consoleLog, readOnly: true }), { code: 'FAILED_PRECONDITION', message: /exited/ });
      await vm.destroy();
      assert.equal(existsSync(vm.paths.dir), false, 'destroy removes the run directory');
    });
  });

  it('detects kill -9 of a launched QEMU', async () => {
    const vm = await launch('kill');
    const killedAt = Date.now();
    process.kill(vm.pid, 'SIGKILL');
    // The latency is printed, not asserted (bench/vm-lifecycle.ts measures it): it depends on the host's load.
    const info = await exitWithin(vm, 60_000);
    const latency = Date.now() - killedAt;
    console.log(`# kill -9 of launched QEMU detected after ${latency} ms (${info.detail})`);
    assert.equal(info.reason, 'crashed');
    assert.deepEqual(readdirSync(vm.paths.dir).sort(), ['console.log', 'qemu.log']);
  });

  it('detects kill -9 of a reattached QEMU (not its child)', async () => {
    const first = await launch('kill-reattached');
    first.detach();
    const vm = await Vm.reattach(first.paths.dir);
    launched.push(vm);
    const killedAt = Date.now();
    process.kill(vm.pid, 'SIGKILL');
    const info = await exitWithin(vm, 60_000);
    const latency = Date.now() - killedAt;
    console.log(`# kill -9 of reattached QEMU detected after ${latency} ms (${info.detail})`);
    assert.equal(info.reason, 'crashed');
    assert.deepEqual(readdirSync(vm.paths.dir).sort(), ['console.log', 'qemu.log']);
  });

  it('reports a guest that powers off as guest-shutdown', async () => {
    const vm = await Vm.launch({
      id: 'life-poweroff',
      // The guest's /init powers off at once with this switch.
      profile: guestProfile({ kernelArgs: ['podvisor.bare=1'] }),
      runDir: join(root.dir, 'poweroff'),
    });
    launched.push(vm);
    const info = await exitWithin(vm, 60_000);
    assert.equal(info.reason, 'guest-shutdown', info.detail);
  });

  it('reports a guest kernel panic as guest-panic', async () => {
    const vm = await Vm.launch({
      id: 'life-panic',
      // No init in the initramfs and no root disk: the kernel panics, reboots (panic=-1) and QEMU exits.
      profile: guestProfile({ kernelArgs: ['rdinit=/nonexistent'] }),
      runDir: join(root.dir, 'panic'),
    });
    launched.push(vm);
    const info = await exitWithin(vm, 60_000);
    assert.equal(info.reason, 'guest-panic', info.detail);
    assert.match(readFileSync(vm.paths.consoleLog, 'utf8'), /Kernel panic/);
  });

  it('moves on to QMP quit when the graceful hook hangs', async () => {
    const vm = await launch('graceful-hang');
    let hookCalled = false;
    const info = await vm.stop({
      timeoutMs: 300,
      graceful: () => {
        hookCalled = true;
        return new Promise(() => undefined);
      },
    });
    assert.ok(hookCalled);
    assert.equal(info.reason, 'stopped');
    assert.match(info.detail, /host-qmp-quit/);
  });

  it('falls back to SIGKILL when QEMU does not answer quit', async () => {
    const vm = await launch('frozen');
    // A stopped process cannot answer QMP, but SIGKILL still ends it.
    process.kill(vm.pid, 'SIGSTOP');
    const info = await vm.stop({ timeoutMs: 500 });
    assert.equal(info.reason, 'stopped');
    assert.equal(info.signal, 'SIGKILL');
    assert.deepEqual(qemuProcessesUsing(vm.paths.dir), []);
    assert.deepEqual(readdirSync(vm.paths.dir).sort(), ['console.log', 'qemu.log']);
  });

  it('stops the VM and removes its files when the readiness hook fails', async () => {
    const runDir = join(root.dir, 'not-ready');
    let hookVm: Vm | undefined;
    await assert.rejects(
      Vm.launch({
        id: 'life-not-ready', profile: guestProfile(), runDir, readyTimeoutMs: 200,
        waitReady: async (v) => {
          hookVm = v;
          await new Promise(() => undefined);
        },
      }),
      { code: 'DEADLINE_EXCEEDED', message: /not ready within 200 ms/ },
    );
    assert.equal(hookVm?.state, 'exited');
    assert.deepEqual(qemuProcessesUsing(runDir), []);
    assert.equal(existsSync(runDir), false);
  });

  it('boots the q35 machine with the same device set on PCI', async () => {
    const vm = await Vm.launch({ id: 'life-q35', profile: guestProfile({ machine: 'q35' }), runDir: join(root.dir, 'q35') });
    launched.push(vm);
    assert.equal(await vm.status(), 'running');
    const blocks = await vm.qmp.execute('query-block');
    assert.ok(blocks.some((b) => b.qdev === 'system-disk' && b.inserted?.ro));
    assert.equal((await vm.stop({ timeoutMs: 5000 })).reason, 'stopped');
  });

  it('refuses reattach to a run directory whose VM is gone', async () => {
    await assert.rejects(Vm.reattach(join(root.dir, 'kill')), { code: 'NOT_FOUND' });
  });

  it('refuses to launch a second VM into a run directory in use', async () => {
    const vm = await launch('busy');
    await assert.rejects(
      Vm.launch({ id: 'life-busy2', profile: guestProfile(), runDir: vm.paths.dir }),
      { code: 'ALREADY_EXISTS' },
    );
    assert.equal(await vm.status(), 'running', 'the first VM is untouched');
    await vm.stop({ timeoutMs: 5000 });
  });
});
