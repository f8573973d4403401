/**
 * VM manager figures on this machine: QEMU start to QMP, cold boot to agent-ready, stop
 * paths, crash detection latency, hot-plug to guest-visible, and the memory of an idle VM.
 *
 *   node --import tsx bench/vm-lifecycle.ts [--rounds N]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentClient } from '../src/agent-client/index.js';
import { configureLogging } from '../src/log.js';
import { locateGuestImage } from '../src/vm/guest-image.js';
import { withProfileDefaults, type VmProfile } from '../src/vm/profile.js';
import { Vm } from '../src/vm/vm.js';

configureLogging('warn');
const roundsArg = process.argv.indexOf('--rounds');
const rounds = roundsArg > 0 ? Number(process.argv[roundsArg + 1]) : 5;

const image = locateGuestImage();
const profile: VmProfile = withProfileDefaults({
  kernel: image.kernel, initrd: image.initrd, systemDisk: image.systemDisk, memoryMiB: 512,
});
const root = mkdtempSync('/tmp/podvisor-bench-vm-');
let seq = 0;

const live = new Set<Vm>();
async function launch(): Promise<Vm> {
  const vm = await Vm.launch({ id: `bench-${++seq}`, profile, runDir: join(root, `vm${seq}`) });
  live.add(vm);
  vm.once('exit', () => live.delete(vm));
  return vm;
}

function summary(label: string, ms: number[]): void {
  const s = [...ms].sort((a, b) => a - b);
  const median = s[Math.floor(s.length / 2)];
  console.log(`${label.padEnd(44)} median ${median.toFixed(0).padStart(6)} ms   min ${s[0].toFixed(0).padStart(6)}   max ${s.at(-1)!.toFixed(0).padStart(6)}   (n=${s.length})`);
}

/** Proportional and resident memory of one process, from smaps_rollup. */
function memoryOf(pid: number): { pssMiB: number; rssMiB: number } {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return { pssMiB: kb('Pss') / 1024, rssMiB: kb('Rss') / 1024 };
}

try {
  console.log(`VM manager benchmark: ${rounds} rounds, accelerator ${(await launchAndStop()).accel}`);

  const qmpReady: number[] = [];
  const quitStop: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    const vm = await launch();
    qmpReady.push(performance.now() - t0);
    const t1 = performance.now();
    await vm.destroy({ timeoutMs: 5000 });
    quitStop.push(performance.now() - t1);
  }
  summary('launch to QMP answering', qmpReady);
  summary('stop by QMP quit (incl. clean-up)', quitStop);

  const killLatency: number[] = [];
  const killLatencyReattached: number[] = [];
  for (let i = 0; i < rounds; i++) {
    for (const reattached of [false, true]) {
      let vm = await launch();
      if (reattached) {
        vm.detach();
        vm = await Vm.reattach(vm.paths.dir);
      }
      const t = performance.now();
      process.kill(vm.pid, 'SIGKILL');
      await vm.waitExit();
      (reattached ? killLatencyReattached : killLatency).push(performance.now() - t);
      await vm.destroy();
    }
  }
  summary('kill -9 detected (own child)', killLatency);
  summary('kill -9 detected (reattached)', killLatencyReattached);

  const agentReady: number[] = [];
  const gracefulStop: number[] = [];
  const plugVisible: number[] = [];
  const unplug: number[] = [];
  const disk = join(root, 'data.erofs');
  const tree = mkdtempSync(join(root, 'tree-'));
  writeFileSync(join(tree, 'hello.txt'), 'hello\n');
  execFileSync('mkfs.erofs', ['--quiet', '--all-root', '-T0', disk, tree]);
  let idle: { pssMiB: number; rssMiB: number } | undefined;
  const bootRounds = Math.max(1, Math.min(rounds, 3));
  for (let i = 0; i < bootRounds; i++) {
    const t0 = performance.now();
    const vm = await launch();
    const agent = await AgentClient.connect(vm.agentSocket, { deadlineMs: 120_000 });
    agentReady.push(performance.now() - t0);
    for (let j = 0; j < 3; j++) {
      const t = performance.now();
      const address = await vm.hotplugDisk({ id: `data-${j}`, path: disk, readOnly: true });
      await agent.mountDisk({ serial: address.serial, mountPoint: `/run/bench/d${j}` });
      plugVisible.push(performance.now() - t);
      await agent.unmount({ path: `/run/bench/d${j}` });
      const u = performance.now();
      await vm.unplugDisk(`data-${j}`);
      unplug.push(performance.now() - u);
    }
    if (i === bootRounds - 1) {
      await new Promise((r) => setTimeout(r, 3000));
      idle = memoryOf(vm.pid);
    }
    const t1 = performance.now();
    await vm.destroy({ graceful: () => agent.shutdown(), timeoutMs: 20_000 });
    gracefulStop.push(performance.now() - t1);
    agent.close();
  }
  summary('cold boot to agent Health', agentReady);
  summary('hot-plug + guest mount (erofs, by serial)', plugVisible);
  summary('unplug (until DEVICE_DELETED + blockdev-del)', unplug);
  summary('graceful stop (agent Shutdown to QEMU gone)', gracefulStop);
  if (idle) console.log(`idle VM with agent, 512 MiB guest: PSS ${idle.pssMiB.toFixed(0)} MiB, RSS ${idle.rssMiB.toFixed(0)} MiB`);
} finally {
  for (const vm of live) if (vm.state === 'running') await vm.stop({ timeoutMs: 2000 }).catch(() => undefined);
  rmSync(root, { recursive: true, force: true });
}

async function launchAndStop(): Promise<Vm> {
  const vm = await launch();
  await vm.destroy({ timeoutMs: 5000 });
  return vm;
}
