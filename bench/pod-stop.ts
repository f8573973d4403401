// StopPodSandbox of a healthy pod (one running container) through the real CRI socket, against
// the floor for ending the same kind of VM: QMP `quit` of a VM booted from the same guest image
// with the same profile to agent-ready, outside podvisord. Measured in the same run, alternating
// which goes first so that load from elsewhere on the machine hits both alike.
// Also prints how each pod's VM ended (the guest's own power-off, or `quit` after the graceful
// phase failed) and the daemon's split of the stop (container kill, VM stop).
//
//   node --import tsx bench/pod-stop.ts [rounds=3]
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { AgentClient } from '../src/agent-client/index.js';
import { agentPortOpened } from '../src/vm/agent-port.js';
import { Vm } from '../src/vm/vm.js';
import { unary } from '../test/helpers/daemon.js';
import { defaultPodProfile } from './bare-boot.js';
import { containerConfig, sandboxConfig } from '../test/helpers/cri.js';
import { startPodTestEnv } from '../test/helpers/pod-env.js';
import { median, seconds } from './figures.js';

const rounds = Number(process.argv[2] ?? 3);


const bareProfile = defaultPodProfile();

/** Boots a bare VM to agent-ready (as bench/bare-boot.ts) and times QMP `quit` until QEMU is gone. */
async function qmpQuit(tag: string): Promise<number> {
  const runDir = mkdtempSync('/tmp/pvb-stop-');
  let agent: AgentClient | undefined;
  const vm = await Vm.launch({
    id: `bench-stop-${process.pid}-${tag}`, runDir, profile: bareProfile, readyTimeoutMs: 180_000,
    waitReady: async (v, deadline) => {
      const port = agentPortOpened(v.qmp);
      agent = await AgentClient.connect(v.agentSocket, { deadlineMs: deadline - Date.now(), portOpened: port.opened }).finally(() => port.dispose());
    },
  });
  try {
    await agent!.health();
    const t = performance.now();
    const info = await vm.stop({ timeoutMs: 10_000 }); // no graceful hook: QMP quit first
    const ms = performance.now() - t;
    if (!/host-qmp-quit/.test(info.detail)) throw new Error(`the bare VM did not end by QMP quit: ${info.detail}`);
    return ms;
  } finally {
    agent?.close();
    await vm.destroy({ timeoutMs: 5000 }).catch(() => undefined);
    rmSync(runDir, { recursive: true, force: true });
  }
}

const env = await startPodTestEnv({ logLevel: 'info' });
const stops: number[] = [];
const quits: number[] = [];
const splits: { killMs: number; vmStopMs: number }[] = [];
const endings: string[] = [];
try {
  await env.pull(env.busybox);
  const rt = env.daemon.client.runtime;
  for (let i = 0; i < rounds; i++) {
    if (i % 2 === 0) quits.push(await qmpQuit(`${i}`));
    const cfg = sandboxConfig(`stop-${i}`, join(env.dir, 'logs', `stop-${i}`));
    const { pod_sandbox_id: id } = await unary(rt, 'RunPodSandbox', { config: cfg });
    const { container_id } = await unary(rt, 'CreateContainer', { pod_sandbox_id: id, sandbox_config: cfg, config: containerConfig('c', env.busybox, ['sleep', '1000']) });
    await unary(rt, 'StartContainer', { container_id });
    const t = performance.now();
    await unary(rt, 'StopPodSandbox', { pod_sandbox_id: id });
    stops.push(performance.now() - t);
    const lines = env.daemon.output().split('\n').filter((l) => l.includes(id));
    const exited = lines.find((l) => l.includes('"QEMU exited"'));
    const stopped = lines.find((l) => l.includes('"sandbox stopped"'));
    const graceful = !lines.some((l) => l.includes('graceful stop failed'));
    endings.push(`${exited ? (JSON.parse(exited) as { detail: string }).detail : 'no "QEMU exited" line'}${graceful ? '' : ' after "graceful stop failed"'}`);
    if (stopped) {
      const s = JSON.parse(stopped) as { killMs?: number; vmStopMs?: number };
      if (s.killMs !== undefined && s.vmStopMs !== undefined) splits.push({ killMs: s.killMs, vmStopMs: s.vmStopMs });
    }
    await unary(rt, 'RemovePodSandbox', { pod_sandbox_id: id });
    if (i % 2 === 1) quits.push(await qmpQuit(`${i}`));
    console.log(`round ${i + 1}/${rounds}: StopPodSandbox ${seconds(stops[i]!)} (${endings[i]}), QMP quit of a bare VM ${seconds(quits[i]!)}`);
  }
  console.log(`\npod stop (${rounds} rounds, medians; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}; TCG unless /dev/kvm is usable)`);
  console.log(`  QMP quit of a bare VM at agent-ready   ${seconds(median(quits))}`);
  console.log(`  StopPodSandbox, 1 running container    ${seconds(median(stops))}  (${(median(stops) / median(quits)).toFixed(2)}x QMP quit)`);
  if (splits.length) {
    console.log(`    container SIGKILL + exit reported    ${seconds(median(splits.map((s) => s.killMs)))}`);
    console.log(`    VM stop (agent Shutdown to QEMU gone) ${seconds(median(splits.map((s) => s.vmStopMs)))}`);
  }
  const graceful = endings.filter((e) => /guest-shutdown/.test(e) && !/graceful stop failed/.test(e)).length;
  console.log(`  VMs that ended by the guest's own power-off: ${graceful} of ${rounds}`);
} finally {
  await env.dispose();
}
