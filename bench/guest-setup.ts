// A/B of two guest images on RunPodSandbox's guest-side steps, in the same run: two podvisords on
// one CNI network (bridge + host-local), one per guest image, take turns (alternating which goes
// first) starting a networked pod. From each daemon's own "sandbox ready" split it prints the steps
// after agent-ready: the boot-phase health call, the guest NIC (ConfigureNetwork), the rest of the
// guest set-up (hostname, DNS, clock, share mount), and the whole RunPodSandbox.
// Use it to show what an agent/ or images/ change does to start-up: build the baseline image from
// the old tree (or keep a copy of out/guest from before the change) and pass its folder.
//
//   node --import tsx bench/guest-setup.ts BASELINE_GUEST_DIR [rounds=3]
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { REPO_ROOT, unary } from '../test/helpers/daemon.js';
import { sandboxConfig } from '../test/helpers/cri.js';
import { startPodTestEnv, type PodTestEnv } from '../test/helpers/pod-env.js';
import { createCniWorld } from '../test/network/cni-fixture.js';
import { median, seconds } from './figures.js';

const baselineDir = process.argv[2] ? resolve(process.argv[2]) : undefined;
const rounds = Number(process.argv[3] ?? 3);
if (!baselineDir || !existsSync(join(baselineDir, 'system.erofs'))) {
  console.error('usage: bench/guest-setup.ts BASELINE_GUEST_DIR [rounds]  (a folder like out/guest, with system.erofs)');
  process.exit(2);
}
const currentDir = join(REPO_ROOT, 'out/guest');


interface Split { runMs: number; healthMs: number; nicMs: number; restMs: number }
type Side = { name: string; env: PodTestEnv; splits: Split[] };

const world = createCniWorld('setup');
world.writeConfig(world.conflist({ dualStack: false }));
const cni = `[cni]\nconf_dir = "${world.confDir}"\nbin_dirs = ["/usr/lib/cni"]\n`;
const sides: Side[] = [];
try {
  for (const [name, dir] of [['baseline', baselineDir], ['current', currentDir]] as const) {
    // 'info': the helper waits for the daemon's "serving" line, and the split is an info line.
    const env = await startPodTestEnv({ logLevel: 'info' }, `[daemon]\nguest_dir = "${dir}"\n${cni}`);
    sides.push({ name, env, splits: [] });
    await env.pull(env.busybox);
  }
  for (let i = 0; i < rounds; i++) {
    const order = i % 2 === 0 ? sides : [...sides].reverse();
    for (const side of order) {
      const rt = side.env.daemon.client.runtime;
      const t = performance.now();
      const { pod_sandbox_id: id } = await unary(rt, 'RunPodSandbox', { config: sandboxConfig(`setup-${side.name}-${i}`, join(side.env.dir, 'logs', `${i}`)) });
      const runMs = performance.now() - t;
      const line = side.env.daemon.output().split('\n').find((l) => l.includes('"sandbox ready"') && l.includes(id));
      if (!line) throw new Error(`no "sandbox ready" line for ${id}`);
      const j = JSON.parse(line) as { phasesMs: number; nicMs: number; setupMs: number };
      side.splits.push({ runMs, healthMs: j.phasesMs, nicMs: j.nicMs, restMs: j.setupMs - j.nicMs });
      await unary(rt, 'RemovePodSandbox', { pod_sandbox_id: id });
      const s = side.splits.at(-1)!;
      console.log(`round ${i + 1}/${rounds} ${side.name.padEnd(8)}: RunPodSandbox ${seconds(s.runMs)}, health ${seconds(s.healthMs)}, guest NIC ${seconds(s.nicMs)}, rest of set-up ${seconds(s.restMs)}`);
    }
  }
  const [base, cur] = sides as [Side, Side];
  const row = (label: string, pick: (s: Split) => number) => {
    const b = median(base.splits.map(pick));
    const c = median(cur.splits.map(pick));
    console.log(`  ${label.padEnd(34)} ${seconds(b).padStart(8)} ${seconds(c).padStart(8)}   ${(c / b).toFixed(2)}`);
  };
  console.log(`\nguest set-up A/B (${rounds} rounds each, medians; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')})`);
  console.log(`  baseline ${baselineDir}\n  current  ${currentDir}`);
  console.log(`  ${''.padEnd(34)} ${'baseline'.padStart(8)} ${'current'.padStart(8)}   ratio`);
  row('boot-phase health call', (s) => s.healthMs);
  row('guest NIC (ConfigureNetwork)', (s) => s.nicMs);
  row('rest of guest set-up', (s) => s.restMs);
  row('RunPodSandbox', (s) => s.runMs);
} finally {
  for (const s of sides) await s.env.dispose().catch(() => undefined);
  await world.cleanup();
}
