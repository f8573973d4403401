import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { REPO_ROOT, unary } from '../helpers/daemon.js';
import { containerConfig, rejectsWith, sandboxConfig, waitContainerState, waitFor } from '../helpers/cri.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import { cgroupLimits } from '../helpers/cgroup-limits.js';
import { qemuProcessesUsing } from '../helpers/vm.js';

/**
 * Issue 9 end to end, through a real podvisord and real QEMU: the accelerator choice on a
 * host whose KVM cannot run a guest (simulated by pointing the probe at a device that opens
 * but is no KVM: real QEMU then refuses, as on a broken host), VMs that end during boot
 * failing RunPodSandbox at once with QEMU's words and leaving nothing, a running pod whose
 * VM dies, QEMU's uid and limits, and a guest flooding its serial console.
 */

const fakeDir = mkdtempSync(join(tmpdir(), 'pv-hardening-'));
const fakeKvm = join(fakeDir, 'fake-kvm');
writeFileSync(fakeKvm, '');
const CONSOLE_CAP = 1024 * 1024;
/**
 * The issue asks for 100 MiB; the serial port under TCG moves 30-300 KiB/s on this shared
 * machine (the emulated UART takes one exit per byte), so 100 MiB takes about an hour. The
 * suite writes 4 MiB (4 times the cap); PODVISOR_CONSOLE_FLOOD_MIB=100 runs the full figure.
 */
const FLOOD_MIB = Number(process.env.PODVISOR_CONSOLE_FLOOD_MIB ?? 4);
const realKvm = existsSync('/dev/kvm');

describe('VM hardening (issue 9)', () => {
  let env: PodTestEnv;
  const rt = () => env.daemon.client.runtime;
  const vmsDir = () => join(env.daemon.state, 'vms');
  const logDir = () => join(env.dir, 'logs');

  before(async () => {
    env = await startPodTestEnv({}, [
        '[vm]', `kvm_device = "${fakeKvm}"`, `console_max_bytes = ${CONSOLE_CAP}`, '',
        '[runtimes.kvm-only]', 'accel = "kvm"', '',
        // No init in the initramfs and no root disk: the guest kernel panics while booting.
        '[runtimes.panics]', 'kernel_args = ["rdinit=/no-such-init", "root=/dev/no-such-disk"]', '',
      ].join('\n'));
    await env.pull(env.busybox);
  });

  after(async () => {
    await env?.dispose();
    rmSync(fakeDir, { recursive: true, force: true });
  });

  /** Nothing of a failed sandbox is left: no run directory, no QEMU, no cgroup (its id is in the error). */
  function assertNothingLeft(what: string, message: string): void {
    const dirs = existsSync(vmsDir()) ? readdirSync(vmsDir()) : [];
    assert.deepEqual(dirs, [], `${what}: no VM run directory left`);
    assert.deepEqual(qemuProcessesUsing(vmsDir()), [], `${what}: no QEMU left`);
    const id = /VM ([0-9a-f]{64})/.exec(message)?.[1];
    if (id) assert.deepEqual(cgroupDirsOf(id), [], `${what}: no cgroup left`);
  }

  test('auto falls back to TCG on a host where KVM cannot run a guest; Status and podvisor status say why', { skip: realKvm && 'this host has a real /dev/kvm: the fake device would not simulate a broken one' }, async () => {
    const accel = await waitFor('the KVM probe', async () => {
      const res = await unary(rt(), 'Status', { verbose: true });
      const a = JSON.parse(res.info.accelerator!) as { accel: string; kvmUsable: boolean; reason: string; probing: boolean; probeMs?: number };
      return a.probing ? undefined : a;
    }, 30_000);
    assert.equal(accel.accel, 'tcg');
    assert.equal(accel.kvmUsable, false);
    assert.match(accel.reason, /^KVM could not run a test guest: .*KVM.*; using TCG emulation$/);
    console.log(`# probe: ${accel.probeMs} ms: ${accel.reason}`);
    const cli = execFileSync(process.execPath, [join(REPO_ROOT, 'bin/podvisor.js'), '--socket', env.daemon.socket, 'status'], { encoding: 'utf8' });
    assert.match(cli, /^accelerator {3}tcg: KVM could not run a test guest: /m);
    assert.match(env.daemon.output(), /VM accelerator chosen: KVM cannot run guests here; TCG is not a security boundary/);
  });

  test('accel = "kvm" is refused at once with the probe\'s reason, never run under TCG', async () => {
    const t0 = performance.now();
    const msg = await rejectsWith(
      unary(rt(), 'RunPodSandbox', { config: sandboxConfig('kvm-only', logDir()), runtime_handler: 'kvm-only' }),
      'FAILED_PRECONDITION',
      /accel = "kvm" but KVM cannot run guests on this host: (KVM could not run a test guest|.*cannot be opened)/,
    );
    console.log(`# kvm refused after ${Math.round(performance.now() - t0)} ms: ${msg}`);
    assertNothingLeft('refused kvm sandbox', msg);
  });

  test('a guest kernel panic during boot ends RunPodSandbox with the panic and the sandbox id, leaving nothing', async () => {
    const gone = watchQemuGone(vmsDir());
    const t0 = performance.now();
    const msg = await rejectsWith(
      unary(rt(), 'RunPodSandbox', { config: sandboxConfig('panics', logDir()), runtime_handler: 'panics' }),
      'FAILED_PRECONDITION',
      /VM [0-9a-f]{64} ended before it was ready: the guest kernel panicked.*panic: Kernel panic - not syncing: /,
    );
    const failedAt = performance.now();
    console.log(`# panic: RunPodSandbox failed ${Math.round(failedAt - t0)} ms after the call, ${Math.round(failedAt - (await gone))} ms after QEMU was gone`);
    console.log(`# panic message: ${msg.slice(0, 400)}`);
    assertNothingLeft('panicked sandbox', msg);
  });

  test('QEMU killed mid-boot ends RunPodSandbox with how it died and the sandbox id, leaving nothing', async () => {
    const call = unary(rt(), 'RunPodSandbox', { config: sandboxConfig('killed', logDir()) });
    call.catch(() => undefined);
    const pid = await waitFor('QEMU to start', async () => qemuProcessesUsing(vmsDir())[0], 30_000);
    // Mid-boot: the guest kernel has started printing.
    await waitFor('the guest to boot', async () => {
      const d = readdirSync(vmsDir())[0];
      return d && existsSync(join(vmsDir(), d, 'console.log')) && statSync(join(vmsDir(), d, 'console.log')).size > 0 ? true : undefined;
    }, 60_000);
    process.kill(pid, 'SIGKILL');
    const killedAt = performance.now();
    // Depending on where the boot was: before QMP answered, or after.
    const msg = await rejectsWith(call, 'FAILED_PRECONDITION', /VM [0-9a-f]{64} (ended before it was ready: QEMU ended without shutting down \(|failed to start: QEMU exited during start-up \()killed by SIGKILL\)/);
    console.log(`# kill -9: RunPodSandbox failed ${Math.round(performance.now() - killedAt)} ms after the kill: ${msg.slice(0, 200)}`);
    assertNothingLeft('killed sandbox', msg);
  });

  describe('a running pod', () => {
    let sandboxId: string;
    let cfg: ReturnType<typeof sandboxConfig>;
    let pid: number;

    before(async () => {
      cfg = sandboxConfig('confined', logDir());
      sandboxId = (await unary(rt(), 'RunPodSandbox', { config: cfg })).pod_sandbox_id;
      const info = JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId, verbose: true })).info.info!);
      pid = info.vm.pid;
    });

    test('QEMU runs as its own unprivileged uid, with seccomp, inside memory and pids limits', () => {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const uid = Number(/^Uid:\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status)![1]);
      assert.ok(uid >= 1_000, `QEMU uid ${uid} is not root or a system account`);
      assert.match(status, /^Uid:\s+(\d+)\s+\1\s+\1\s+\1$/m, 'real, effective, saved and fs uid are all the VM\'s');
      assert.match(status, /^CapEff:\s+0+$/m);
      assert.match(status, /^NoNewPrivs:\s+1$/m);
      assert.match(status, /^Seccomp:\s+2$/m);
      const cgroups = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      const limits = cgroupLimits(cgroups);
      // The default VM: 512 MiB of guest RAM plus the configured QEMU overhead (256 MiB).
      assert.equal(limits.memoryBytes, (512 + 256) * 1024 * 1024, cgroups);
      assert.equal(limits.pidsMax, 256, cgroups);
      console.log(`# QEMU pid ${pid}: uid ${uid}, memory limit ${limits.memoryBytes / 1024 / 1024} MiB (peak so far ${Math.round(limits.memoryPeak / 1024 / 1024)} MiB), pids.max ${limits.pidsMax} (now ${limits.pidsNow})`);
      // Another pod gets another uid: one escaped QEMU cannot signal or read another.
    });

    test(`a privileged container writing ${FLOOD_MIB} MiB to the serial console leaves the console within its cap and the daemon responsive`, async () => {
      const runDir = join(vmsDir(), sandboxId);
      const { container_id } = await unary(rt(), 'CreateContainer', {
        pod_sandbox_id: sandboxId, sandbox_config: cfg,
        // The guest's /dev/console is its serial port (console=ttyS0); device 5:1 is one a container may open.
        config: containerConfig('flood', env.busybox, ['sh', '-c', `mknod /tmp/console c 5 1 && head -c ${FLOOD_MIB * 1024 * 1024} /dev/zero | tr "\\0" "x" > /tmp/console && echo flooded`], {
          linux: { security_context: { privileged: true } },
        }),
      });
      await unary(rt(), 'StartContainer', { container_id });
      const t0 = performance.now();
      let slowest = 0;
      let calls = 0;
      let maxOnDisk = 0;
      for (;;) {
        const c0 = performance.now();
        const st = (await unary(rt(), 'ContainerStatus', { container_id })).status!;
        await unary(rt(), 'Version', {});
        slowest = Math.max(slowest, performance.now() - c0);
        calls++;
        maxOnDisk = Math.max(maxOnDisk, consoleBytes(runDir));
        if (st.state === 'CONTAINER_EXITED') {
          const log = readFileSync(st.log_path, 'utf8');
          assert.equal(st.exit_code, 0, `the flood container exited with ${st.exit_code}: ${log.slice(-500)}`);
          break;
        }
        if (performance.now() - t0 > FLOOD_MIB * 120_000) assert.fail(`the flood did not finish in ${FLOOD_MIB * 2} minutes (below 8.5 KiB/s)`);
        await new Promise((r) => setTimeout(r, 500));
      }
      const secs = (performance.now() - t0) / 1000;
      console.log(`# console flood: ${FLOOD_MIB} MiB in ${secs.toFixed(0)} s (${((FLOOD_MIB * 1024) / secs).toFixed(0)} KiB/s); console on disk peaked at ${maxOnDisk} bytes (cap ${CONSOLE_CAP}); slowest of ${calls} CRI round trips meanwhile ${Math.round(slowest)} ms`);
      assert.ok(maxOnDisk <= CONSOLE_CAP, `console kept ${maxOnDisk} bytes, over the ${CONSOLE_CAP} cap`);
      assert.ok(consoleBytes(runDir) > CONSOLE_CAP / 4, 'the console ring holds the recent output');
      const kept = readFileSync(join(runDir, 'console.log.1'), 'utf8') + readFileSync(join(runDir, 'console.log'), 'utf8');
      assert.ok(kept.includes('x'.repeat(4096)), 'the flood\'s last output is in the ring');
      assert.ok(slowest < 10_000, `a CRI call took ${slowest} ms during the flood`);
    });

    test('after a podvisord restart the console is read again (QEMU outlives the daemon)', async () => {
      const runDir = join(vmsDir(), sandboxId);
      await env.killDaemon();
      await env.startDaemon();
      const marker = `console-after-restart-${Date.now()}`;
      const { container_id } = await unary(rt(), 'CreateContainer', {
        pod_sandbox_id: sandboxId, sandbox_config: cfg,
        config: containerConfig('marker', env.busybox, ['sh', '-c', `mknod /tmp/console c 5 1 && echo ${marker} > /tmp/console`], {
          linux: { security_context: { privileged: true } },
        }),
      });
      await unary(rt(), 'StartContainer', { container_id });
      await waitFor('the marker on the console', async () => (readFileSync(join(runDir, 'console.log'), 'utf8').includes(marker) ? true : undefined), 60_000);
      assert.equal(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Uid:\s+(\d+)/m)![1] !== '0', true);
    });

    test('a guest that crashes makes the sandbox NOTREADY and its containers EXITED with the reason', async () => {
      const { container_id: sleeper } = await unary(rt(), 'CreateContainer', {
        pod_sandbox_id: sandboxId, sandbox_config: cfg, config: containerConfig('sleeper', env.busybox, ['sleep', '3600']),
      });
      await unary(rt(), 'StartContainer', { container_id: sleeper });
      const { container_id: crasher } = await unary(rt(), 'CreateContainer', {
        pod_sandbox_id: sandboxId, sandbox_config: cfg,
        config: containerConfig('crasher', env.busybox, ['sh', '-c', 'echo c > /proc/sysrq-trigger'], { linux: { security_context: { privileged: true } } }),
      });
      // The guest may die before StartContainer's answer arrives.
      await unary(rt(), 'StartContainer', { container_id: crasher }).catch(() => undefined);
      const st = await waitContainerState(env.daemon.client, sleeper, 'CONTAINER_EXITED', 60_000);
      assert.equal(st.reason, 'PodVMExited');
      assert.match(st.message, /the pod VM exited unexpectedly \(guest-panic\): the guest kernel panicked/);
      // The containers are marked first, then the sandbox.
      await waitFor('the sandbox to be NOTREADY', async () => {
        const sb = (await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId })).status!;
        return sb.state === 'SANDBOX_NOTREADY' ? true : undefined;
      }, 10_000);
      // Reattached after the restart above, QEMU is no longer podvisord's child: once dead it
      // may stay a zombie until init reaps it, and its cgroups go when it has.
      assert.equal(isAlive(pid), false, 'QEMU is gone');
      await waitFor('its cgroups to be removed', async () => (cgroupDirsOf(sandboxId).length === 0 ? true : undefined), 45_000);
    });
  });
});

/** Resolves with the time (performance.now) the first QEMU under `dir` is seen gone. */
async function watchQemuGone(dir: string): Promise<number> {
  let seen = false;
  for (let i = 0; i < 120_000 / 20; i++) {
    const alive = qemuProcessesUsing(dir).length > 0;
    if (alive) seen = true;
    if (seen && !alive) return performance.now();
    await new Promise((r) => setTimeout(r, 20));
  }
  return performance.now();
}

/** Present and not a zombie. */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

function consoleBytes(runDir: string): number {
  let n = 0;
  for (const f of ['console.log', 'console.log.1']) {
    try {
      n += statSync(join(runDir, f)).size;
    } catch {
      /* not yet */
    }
  }
  return n;
}

/** The memory and pids limits of the cgroups named in /proc/<pid>/cgroup (v1 or v2). */
function cgroupDirsOf(id: string): string[] {
  return ['/sys/fs/cgroup/memory/podvisor', '/sys/fs/cgroup/pids/podvisor', '/sys/fs/cgroup/podvisor']
    .map((d) => join(d, id))
    .filter((d) => existsSync(d));
}
