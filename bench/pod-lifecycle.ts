// RunPodSandbox, CreateContainer and StartContainer through the real CRI socket, and
// RunPodSandbox as a ratio to a bare boot (QEMU start to agent ready) of the same guest
// image with the same VM profile, measured in the same run.
//
//   node --import tsx bench/pod-lifecycle.ts [rounds=3]
import { join } from 'node:path';
import { bootToAgentReady, defaultPodProfile } from './bare-boot.js';
import { unary } from '../test/helpers/daemon.js';
import { startPodTestEnv } from '../test/helpers/pod-env.js';
import { containerConfig, sandboxConfig } from '../test/helpers/cri.js';
import { median, seconds } from './figures.js';

const rounds = Number(process.argv[2] ?? 3);


const bareProfile = defaultPodProfile();
const bareBoot = async (i: number) => (await bootToAgentReady(bareProfile, `${i}`)).ms;

const env = await startPodTestEnv({ logLevel: 'info' });
const bare: number[] = [];
const runp: number[] = [];
const create: number[] = [];
const start: number[] = [];
try {
  await env.pull(env.busybox);
  const rt = env.daemon.client.runtime;
  for (let i = 0; i < rounds; i++) {
    // Alternate which goes first, so that load from elsewhere on the machine hits both alike.
    if (i % 2 === 0) bare.push(await bareBoot(i));
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
    if (i % 2 === 1) bare.push(await bareBoot(i));
    console.log(`round ${i + 1}/${rounds}: bare boot ${seconds(bare[i]!)}, RunPodSandbox ${seconds(runp[i]!)}, CreateContainer ${seconds(create[i]!)}, StartContainer ${seconds(start[i]!)}`);
  }
  console.log(`\npod lifecycle (${rounds} rounds, medians; TCG unless /dev/kvm is usable)`);
  console.log(`  bare boot to agent ready   ${seconds(median(bare))}`);
  console.log(`  RunPodSandbox              ${seconds(median(runp))}  (${(median(runp) / median(bare)).toFixed(2)}x bare boot)`);
  console.log(`  CreateContainer            ${seconds(median(create))}  (first container of a pod: includes the image disk hot-plug)`);
  console.log(`  StartContainer             ${seconds(median(start))}`);
} finally {
  await env.dispose();
}
