// RunPodSandbox from a VM template against a cold RunPodSandbox and a bare boot (QEMU start to
// agent ready, no daemon), medians through the real CRI socket, in one run on the same guest
// image and VM profile. Also: where a clone's time goes (the daemon's "sandbox ready" phases)
// and the PSS of idle clones (smaps_rollup: the template RAM file's pages split between them).
//
//   node --import tsx bench/template.ts [rounds=5] [idle=5]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../src/config/config.js';
import { sizePodVm, vmProfileFor } from '../src/pod/vm-sizing.js';
import { unary } from '../test/helpers/daemon.js';
import { sandboxConfig } from '../test/helpers/cri.js';
import { startPodTestEnv } from '../test/helpers/pod-env.js';
import { median } from './agent-channel.js';
import { bootToAgentReady } from './bare-boot.js';

const rounds = Number(process.argv[2] ?? 5);
const idle = Number(process.argv[3] ?? 5);
const fmt = (ms: number) => `${(ms / 1000).toFixed(3)} s`;

function pssKiB(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

const env = await startPodTestEnv({ logLevel: 'info' }, '[runtimes.tpl]\ntemplate = true\n[runtimes.cold]\ntemplate = false\n');
const defaults = loadConfig(undefined).runtimes['']!;
const vmProfile = vmProfileFor(defaults, sizePodVm(defaults));
const rt = env.daemon.client.runtime;
const results: Record<'bare' | 'cold' | 'template', number[]> = { bare: [], cold: [], template: [] };
let n = 0;
const runPod = async (handler: string) => {
  const cfg = sandboxConfig(`bench-${n++}`, join(env.dir, 'logs', `bench-${n}`));
  const t = performance.now();
  const { pod_sandbox_id } = await unary(rt, 'RunPodSandbox', { config: cfg, runtime_handler: handler });
  return { id: pod_sandbox_id, ms: performance.now() - t };
};
const remove = (id: string) => unary(rt, 'RemovePodSandbox', { pod_sandbox_id: id });
try {
  // The first template sandbox builds the template (a cold boot and a save): shown, not counted.
  const first = await runPod('tpl');
  console.log(`template build + first clone: ${fmt(first.ms)}`);
  await remove(first.id);
  for (let i = 0; i < rounds; i++) {
    // Alternate the order, so that load from elsewhere on the machine hits all three alike.
    const order: Array<'bare' | 'cold' | 'template'> = i % 2 ? ['template', 'cold', 'bare'] : ['bare', 'cold', 'template'];
    for (const kind of order) {
      if (kind === 'bare') {
        results.bare.push((await bootToAgentReady(vmProfile, `${i}`)).ms);
      } else {
        const p = await runPod(kind === 'cold' ? 'cold' : 'tpl');
        results[kind].push(p.ms);
        await remove(p.id);
      }
    }
  }
  const bare = median(results.bare);
  console.log(`\nRunPodSandbox through the CRI socket, medians of ${rounds} (load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}):`);
  for (const kind of ['bare', 'cold', 'template'] as const) {
    const m = median(results[kind]);
    console.log(`  ${kind.padEnd(9)} ${fmt(m)}  (${(m / bare).toFixed(2)}x bare)  all: ${results[kind].map(fmt).join(', ')}`);
  }
  const phases = [...env.daemon.output().matchAll(/"boot":"template".*?"bootPhases":(\{[^}]*\}).*?"cniWaitMs":(\d+),"setupMs":(\d+)/g)].slice(-rounds);
  if (phases.length) console.log(`  clone phases (last): ${phases.at(-1)![1]} setupMs=${phases.at(-1)![3]}`);

  // Idle clones: PSS of each QEMU (the shared template RAM is split between the clones mapping it).
  const ids: string[] = [];
  for (let i = 0; i < idle; i++) ids.push((await runPod('tpl')).id);
  await new Promise((r) => setTimeout(r, 3000));
  const pss: number[] = [];
  for (const id of ids) {
    const info = JSON.parse((await unary(rt, 'PodSandboxStatus', { pod_sandbox_id: id, verbose: true })).info.info!) as { vm: { pid: number } };
    pss.push(pssKiB(info.vm.pid));
  }
  console.log(`\nidle clones: N=${idle}, PSS per QEMU median ${(median(pss) / 1024).toFixed(1)} MiB (all: ${pss.map((k) => (k / 1024).toFixed(0)).join(', ')} MiB)`);
  for (const id of ids) await remove(id);
} finally {
  await env.dispose();
}
