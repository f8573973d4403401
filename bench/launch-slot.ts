// The launch slot on the critical path of concurrent starts, small enough for a shared 2-core host:
// `[vm] max_parallel_launches = 1` and two networked RunPodSandbox calls at once, against one call
// alone in the same run (rounds alternating which goes first). With the slot held only through the
// boot, the second call waits for the first one's boot, not for its guest set-up as well; the
// daemon's "sandbox ready" split of the second call says how long it queued.
//
//   node --import tsx bench/launch-slot.ts [rounds=2]
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { unary } from '../test/helpers/daemon.js';
import { sandboxConfig } from '../test/helpers/cri.js';
import { startPodTestEnv } from '../test/helpers/pod-env.js';
import { createCniWorld } from '../test/network/cni-fixture.js';
import { median, seconds } from './figures.js';

const rounds = Number(process.argv[2] ?? 2);

interface Ready { queuedMs: number; bootMs: number; cniWaitMs: number; setupMs: number }

const world = createCniWorld('slot');
world.writeConfig(world.conflist({ dualStack: false }));
const env = await startPodTestEnv({ logLevel: 'info' },
  `[vm]\nmax_parallel_launches = 1\n[daemon]\nboot_timeout_seconds = 900\n[cni]\nconf_dir = "${world.confDir}"\nbin_dirs = ["/usr/lib/cni"]\n`);
const rt = env.daemon.client.runtime;
const readyOf = (id: string): Ready => {
  const line = env.daemon.output().split('\n').find((l) => l.includes('"sandbox ready"') && l.includes(id));
  if (!line) throw new Error(`no "sandbox ready" line for ${id}`);
  return JSON.parse(line) as Ready;
};
let n = 0;
const start = async () => {
  const t = performance.now();
  const { pod_sandbox_id: id } = await unary(rt, 'RunPodSandbox', { config: sandboxConfig(`slot-${n}`, join(env.dir, 'logs', `${n++}`)) });
  return { id, ms: performance.now() - t };
};

const alone: number[] = [];
const pairWall: number[] = [];
const secondQueued: number[] = [];
const firstBoot: number[] = [];
const firstSetup: number[] = [];
try {
  const single = async () => {
    const s = await start();
    alone.push(s.ms);
    await unary(rt, 'RemovePodSandbox', { pod_sandbox_id: s.id });
  };
  const pair = async () => {
    const t = performance.now();
    const both = await Promise.all([start(), start()]);
    pairWall.push(performance.now() - t);
    const [a, b] = both.map((s) => readyOf(s.id)).sort((x, y) => x.queuedMs - y.queuedMs) as [Ready, Ready];
    secondQueued.push(b.queuedMs);
    firstBoot.push(a.bootMs);
    firstSetup.push(a.cniWaitMs + a.setupMs);
    for (const s of both) await unary(rt, 'RemovePodSandbox', { pod_sandbox_id: s.id });
  };
  for (let i = 0; i < rounds; i++) {
    if (i % 2 === 0) { await single(); await pair(); } else { await pair(); await single(); }
    console.log(`round ${i + 1}/${rounds}: alone ${seconds(alone[i]!)}; two at once ${seconds(pairWall[i]!)} wall, the second queued ${seconds(secondQueued[i]!)} (the first's boot ${seconds(firstBoot[i]!)}, its guest set-up after the boot ${seconds(firstSetup[i]!)})`);
  }
  console.log(`\nlaunch slot, max_parallel_launches = 1 (${rounds} rounds, medians; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')})`);
  console.log(`  one RunPodSandbox alone                 ${seconds(median(alone))}`);
  console.log(`  two at once, wall                       ${seconds(median(pairWall))}  (${(median(pairWall) / median(alone)).toFixed(2)}x one alone)`);
  console.log(`  the second's wait for the slot          ${seconds(median(secondQueued))}`);
  console.log(`    the first's boot (launch to agent)    ${seconds(median(firstBoot))}`);
  console.log(`    the first's guest set-up after it     ${seconds(median(firstSetup))}`);
} finally {
  await env.dispose();
  await world.cleanup();
}
