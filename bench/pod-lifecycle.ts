// RunPodSandbox, CreateContainer and StartContainer through the real CRI socket, and
// RunPodSandbox as a ratio to a bare boot (QEMU start to agent ready) of the same guest
// image with the same VM profile, measured in the same run.
//
//   node --import tsx bench/pod-lifecycle.ts [rounds=3]
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../src/config/config.js';
import { AgentClient } from '../src/agent-client/index.js';
import { sizePodVm, vmProfileFor } from '../src/pod/vm-sizing.js';
import { Vm } from '../src/vm/vm.js';
import { unary } from '../test/helpers/daemon.js';
import { startPodTestEnv } from '../test/helpers/pod-env.js';
import { containerConfig, sandboxConfig } from '../test/helpers/cri.js';

const rounds = Number(process.argv[2] ?? 3);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const fmt = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

async function bareBoot(runRoot: string, i: number): Promise<number> {
  const profile = loadConfig(undefined).runtimes['']!;
  const started = performance.now();
  let agent: AgentClient | undefined;
  const vm = await Vm.launch({
    id: `bench-bare-${process.pid}-${i}`,
    profile: vmProfileFor(profile, sizePodVm(profile)),
    runDir: join(runRoot, String(i)),
    readyTimeoutMs: 120_000,
    waitReady: async (v, deadline) => {
      agent = await AgentClient.connect(v.agentSocket, { deadlineMs: deadline - Date.now() });
    },
  });
  const ms = performance.now() - started;
  agent?.close();
  await vm.destroy({ timeoutMs: 5000 });
  return ms;
}

const env = await startPodTestEnv({ logLevel: 'info' });
const runRoot = mkdtempSync('/tmp/pvb-');
const bare: number[] = [];
const runp: number[] = [];
const create: number[] = [];
const start: number[] = [];
try {
  await env.pull(env.busybox);
  const rt = env.daemon.client.runtime;
  for (let i = 0; i < rounds; i++) {
    // Alternate which goes first, so that load from elsewhere on the machine hits both alike.
    if (i % 2 === 0) bare.push(await bareBoot(runRoot, i));
    const cfg = sandboxConfig(`bench-${i}`, join(env.dir, 'logs', `bench-${i}`));
    let t = performance.now();
    const { pod_sandbox_id } = await unary(rt, 'RunPodSandbox', { config: cfg });
    runp.push(performance.now() - t);
    t = performance.now();
    const { container_id } = await unary(rt, 'CreateContainer', { pod_sandbox_id, sandbox_config: cfg, config: containerConfig('c', env.busybox, ['sleep', '1000']) });
    create.push(performance.now() - t);
    t = performance.now();
    await unary(rt, 'StartContainer', { container_id });
    start.push(performance.now() - t);
    await unary(rt, 'RemovePodSandbox', { pod_sandbox_id });
    if (i % 2 === 1) bare.push(await bareBoot(runRoot, i));
    console.log(`round ${i + 1}/${rounds}: bare boot ${fmt(bare[i]!)}, RunPodSandbox ${fmt(runp[i]!)}, CreateContainer ${fmt(create[i]!)}, StartContainer ${fmt(start[i]!)}`);
  }
  console.log(`\npod lifecycle (${rounds} rounds, medians; TCG unless /dev/kvm is usable)`);
  console.log(`  bare boot to agent ready   ${fmt(median(bare))}`);
  console.log(`  RunPodSandbox              ${fmt(median(runp))}  (${(median(runp) / median(bare)).toFixed(2)}x bare boot)`);
  console.log(`  CreateContainer            ${fmt(median(create))}  (first container of a pod: includes the image disk hot-plug)`);
  console.log(`  StartContainer             ${fmt(median(start))}`);
} finally {
  await env.dispose();
  rmSync(runRoot, { recursive: true, force: true });
}
