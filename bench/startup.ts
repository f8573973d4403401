/**
 * Start-up, memory and density of pod sandboxes, from one run (`npm run bench`):
 *  - bare QEMU boot of the same guest image (bench/bare-boot.ts): to /init, to agent-ready;
 *  - cold RunPodSandbox, template RunPodSandbox (when main has templates), CreateContainer +
 *    StartContainer, all through the real CRI socket of a real podvisord, pods on a real CNI
 *    bridge; each a median, with its ratio to the bare boot to agent-ready;
 *  - where a cold RunPodSandbox's time goes (the daemon's own "sandbox ready" phases);
 *  - PSS per idle sandbox at N=1 and N=10 (bench/sandbox-memory.ts says how it is counted);
 *  - N RunPodSandbox calls at once: wall time;
 *  - the largest number of idle pods this machine held, with what stopped the climb.
 *
 *   npm run bench [-- --full] [--rounds R] [--concurrent N] [--max-pods CAP] [--max-pods-budget S]
 *                 [--settle S] [--config-extra TOML] [--no-knobs] [--no-compare-unbounded]
 *
 * Quick (default): 3 rounds, density cap 12 pods / 120 s. --full: 7 rounds, cap 250 / 20 min.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config/config.js';
import { messageOf } from '../src/errors.js';
import { sizePodVm, vmProfileFor } from '../src/pod/vm-sizing.js';
import { createCniWorld, networksFor } from '../test/network/cni-fixture.js';
import { killLeftoverVms, startDaemon, unary, type RunningDaemon } from '../test/helpers/daemon.js';
import { startPodTestEnv, type PodTestEnv } from '../test/helpers/pod-env.js';
import { containerConfig, sandboxConfig } from '../test/helpers/cri.js';
import { median } from './agent-channel.js';
import { bareBootToInit, bootToAgentReady } from './bare-boot.js';
import { measureKnobs, type KnobVariant } from './memory-knobs.js';
import { describeBreakdown, meanBreakdown, measureSandboxes, mib } from './sandbox-memory.js';

const { values } = parseArgs({
  allowNegative: true,
  options: {
    full: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    concurrent: { type: 'string', default: '10' },
    'max-pods': { type: 'string' },
    'max-pods-budget': { type: 'string' },
    settle: { type: 'string' },
    'config-extra': { type: 'string', default: '' },
    knobs: { type: 'boolean', default: true },
    'compare-unbounded': { type: 'boolean', default: true },
  },
});
const full = values.full!;
const rounds = Number(values.rounds ?? (full ? 7 : 3));
const concurrent = Number(values.concurrent);
const maxPods = Number(values['max-pods'] ?? (full ? 250 : 12));
const maxPodsBudgetMs = Number(values['max-pods-budget'] ?? (full ? 1200 : 120)) * 1000;
const settleMs = Number(values.settle ?? (full ? 20 : 8)) * 1000;
/** The density climb stops while this much host memory is still available, so the host stays usable. */
const HOST_RESERVE_BYTES = 3 * 1024 ** 3;

const fmt = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The daemon the pod steps talk to: the bench's own, or for one step a second one with other settings. */
let other: RunningDaemon | undefined;
const rt = () => (other ?? env.daemon).client.runtime;

/** Whether this build has VM templates: the config accepts `[runtimes.X] template` (issue 16a). */
function templateSupport(): { handler: string; config: string } | { reason: string } {
  const dir = mkdtempSync('/tmp/pvb-tpl-');
  const config = '[runtimes.bench-template]\ntemplate = true\n';
  try {
    writeFileSync(join(dir, 'c.toml'), config);
    loadConfig(join(dir, 'c.toml'));
    return { handler: 'bench-template', config };
  } catch (e) {
    return { reason: `this build's config has no VM templates (${messageOf(e).replace(/^config \S+: /, '')})` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function memAvailable(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

let serial = 0;
async function runPod(handler: string, name = `b${serial++}`): Promise<{ id: string; ms: number; cfg: ReturnType<typeof sandboxConfig> }> {
  const cfg = sandboxConfig(name, join((other ?? env.daemon).dir, 'logs', name));
  const t = performance.now();
  const { pod_sandbox_id } = await unary(rt(), 'RunPodSandbox', { config: cfg, runtime_handler: handler });
  return { id: pod_sandbox_id, ms: performance.now() - t, cfg };
}

async function removePods(ids: string[], parallel = 4): Promise<void> {
  const queue = [...ids];
  await Promise.all(Array.from({ length: parallel }, async () => {
    for (let id = queue.shift(); id !== undefined; id = queue.shift()) await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: id });
  }));
}

/** The daemon's "sandbox ready" log lines since `from` (its pino JSON output). */
function readyPhases(from: number): Array<Record<string, number>> {
  const out: Array<Record<string, number>> = [];
  for (const line of env.daemon.output().slice(from).split('\n')) {
    if (!line.includes('"sandbox ready"')) continue;
    try {
      const j = JSON.parse(line) as Record<string, unknown>;
      const phases = (j.bootPhases ?? {}) as Record<string, number>;
      // Cold boots only: a template clone's split has other phases (template_restore, no kernel boot).
      if (phases.kernel === undefined) continue;
      out.push({
        netns: Number(j.netnsMs), qemuToQmp: phases.launch! * 1000, kernelAndInit: phases.kernel! * 1000, agentStart: phases.agent_ready! * 1000,
        boot: Number(j.bootMs), cniWait: Number(j.cniWaitMs), setup: Number(j.setupMs), record: Number(j.recordMs),
      });
    } catch {
      /* not JSON */
    }
  }
  return out;
}

const world = createCniWorld('bench');
world.writeConfig(world.conflist({ dualStack: false }));
const template = templateSupport();
let env!: PodTestEnv;
const live = new Set<string>();
const summary: Array<[string, string]> = [];
const knobRows: Array<[string, string]> = [];
try {
  env = await startPodTestEnv(
    { logLevel: 'info', startTimeoutMs: 180_000 },
    `[daemon]\nboot_timeout_seconds = 900\n[cni]\nconf_dir = "${world.confDir}"\nbin_dirs = ["/usr/lib/cni"]\n${'config' in template ? template.config : ''}${values['config-extra']}\n`,
  );
  await env.pull(env.busybox);
  const daemonConfig = loadConfig(join(env.dir, 'podvisor.toml'));
  const profile = daemonConfig.runtimes['']!;
  const vmProfile = vmProfileFor(profile, sizePodVm(profile));
  console.log(`pod VM: ${vmProfile.machine}, ${vmProfile.vcpus} vCPU, ${vmProfile.memoryMiB} MiB; host: ${(await import('node:os')).cpus().length} cores, load ${(await import('node:os')).loadavg().map((l) => l.toFixed(1)).join(' ')}`);

  // ---------------------------------------------------------------- sequential rounds
  const bareInit: number[] = [];
  const bareInitGuest: number[] = [];
  const bareReady: number[] = [];
  const cold: number[] = [];
  const tpl: number[] = [];
  const create: number[] = [];
  const start: number[] = [];
  if ('handler' in template) {
    // The first clone waits for the template's build (once per handler, profile, image, QEMU): timed apart.
    const first = await runPod(template.handler);
    summary.push(['template build + first clone', fmt(first.ms)]);
    await removePods([first.id]);
  }
  /** Idle pods for the memory, concurrency and density steps: template clones when there are templates. */
  const idleHandler = 'handler' in template ? template.handler : '';
  const idleKind = 'handler' in template ? 'template clones' : 'cold VMs';
  const logFrom = env.daemon.output().length;
  for (let i = 0; i < rounds; i++) {
    const b = await bareBootToInit(vmProfile, `${i}`);
    bareInit.push(b.ms);
    if (b.initAt !== undefined) bareInitGuest.push(b.initAt * 1000);
    const r = await bootToAgentReady(vmProfile, `${i}`);
    bareReady.push(r.ms);
    const pod = await runPod('');
    live.add(pod.id);
    cold.push(pod.ms);
    let t = performance.now();
    const { container_id } = await unary(rt(), 'CreateContainer', { pod_sandbox_id: pod.id, sandbox_config: pod.cfg, config: containerConfig('c', env.busybox, ['sleep', '1000']) });
    create.push(performance.now() - t);
    t = performance.now();
    await unary(rt(), 'StartContainer', { container_id });
    start.push(performance.now() - t);
    await removePods([pod.id]);
    live.delete(pod.id);
    let tplNote = '';
    if ('handler' in template) {
      const c = await runPod(template.handler);
      live.add(c.id);
      tpl.push(c.ms);
      await removePods([c.id]);
      live.delete(c.id);
      tplNote = `, template RunPodSandbox ${fmt(c.ms)}`;
    }
    console.log(`round ${i + 1}/${rounds}: bare to /init ${fmt(b.ms)} (guest ${b.initAt}s), bare to agent-ready ${fmt(r.ms)}, cold RunPodSandbox ${fmt(pod.ms)}${tplNote}, CreateContainer ${fmt(create[i]!)}, StartContainer ${fmt(start[i]!)}`);
  }
  const base = median(bareReady);
  const ratio = (ms: number) => `${(ms / base).toFixed(2)}x bare agent-ready`;
  summary.push(['bare boot to /init (host: launch to power-off)', `${fmt(median(bareInit))} (guest clock at /init ${fmt(median(bareInitGuest))})`]);
  summary.push(['bare boot to agent-ready', `${fmt(base)} (baseline)`]);
  summary.push(['cold RunPodSandbox', `${fmt(median(cold))} (${ratio(median(cold))})`]);
  summary.push(['template RunPodSandbox', 'handler' in template ? `${fmt(median(tpl))} (${ratio(median(tpl))})` : `not available: ${template.reason}`]);
  summary.push(['CreateContainer + StartContainer', `${fmt(median(create.map((c, i) => c + start[i]!)))} (create ${fmt(median(create))}, start ${fmt(median(start))}; first container: includes the image disk hot-plug)`]);

  const phases = readyPhases(logFrom);
  if (phases.length > 0) {
    const keys = Object.keys(phases[0]!);
    console.log(`\nwhere a cold RunPodSandbox's time goes (daemon log, medians of ${phases.length}): ` +
      keys.map((k) => `${k} ${fmt(median(phases.map((p) => p[k]!)))}`).join(', '));
    console.log('  (netns: namespace + tap before QEMU; boot = qemuToQmp + kernelAndInit + agentStart; cniWait: CNI ADD still running after the agent answered; setup: guest NIC + hostname/DNS; record: state on disk)');
  }

  // ---------------------------------------------------------------- memory knobs, each against the same VM without it
  if (values.knobs) {
    const knobBase = { ...vmProfile, tcgTbSizeMiB: undefined, freePageReporting: undefined, kernelArgs: vmProfile.kernelArgs.filter((a) => !a.startsWith('podvisor.agent_v8=')) };
    const v8 = (name: string) => ({ kernelArgs: [...knobBase.kernelArgs, `podvisor.agent_v8=${name}`] });
    const variants: KnobVariant[] = [
      { name: 'baseline (QEMU default tb-size, no balloon, agent V8 default flags)', change: v8('default') },
      ...(full ? [16, 32, 64, 128] : [32, 64]).map((mb) => ({ name: `tb-size=${mb}`, change: { ...v8('default'), tcgTbSizeMiB: mb } })),
      { name: 'free-page reporting', change: { ...v8('default'), freePageReporting: true } },
      { name: 'agent V8 --max-semi-space-size=1', change: v8('semi1') },
      { name: 'agent V8 --lite-mode', change: v8('lite') },
      { name: 'agent V8 --jitless', change: v8('jitless') },
      { name: 'as configured (daemon defaults)', change: { tcgTbSizeMiB: vmProfile.tcgTbSizeMiB, freePageReporting: vmProfile.freePageReporting, kernelArgs: vmProfile.kernelArgs } },
    ];
    console.log(`\nmemory knobs: one idle pod VM per variant, ${settleMs / 1000} s after agent-ready, PSS split as below`);
    const knobs = await measureKnobs(knobBase, variants, { boots: full ? 3 : 1, settleMs, log: (l) => console.log(l) });
    const b0 = knobs[0]!;
    for (const k of knobs) {
      const d = (k.memory.total - b0.memory.total) / 2 ** 20;
      knobRows.push([k.name, `PSS ${describeBreakdown(k.memory)}; ${d >= 0 ? '+' : ''}${d.toFixed(1)} MiB vs baseline; boot to agent-ready ${fmt(k.bootMs)} (${(k.bootMs / b0.bootMs).toFixed(2)}x baseline)`]);
    }
  }

  // ---------------------------------------------------------------- memory at N=1
  const one = await runPod(idleHandler);
  live.add(one.id);
  await sleep(settleMs);
  const m1 = measureSandboxes([one.id]);
  summary.push([`PSS per idle sandbox, N=1 (${idleKind})`, describeBreakdown(m1[0]!)]);
  await removePods([one.id]);
  live.delete(one.id);

  // ---------------------------------------------------------------- N at once, then memory at N
  const atOnce = async (label: string) => {
    const t0 = performance.now();
    const results = await Promise.allSettled(Array.from({ length: concurrent }, () => runPod(idleHandler)));
    const wall = performance.now() - t0;
    const ok = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    for (const p of ok) live.add(p.id);
    const failed = results.flatMap((r) => (r.status === 'rejected' ? [messageOf(r.reason)] : []));
    summary.push([`${concurrent} concurrent RunPodSandbox (wall), ${idleKind}, ${label}`,
      `${fmt(wall)} (${ratio(wall)}; per call median ${fmt(median(ok.map((p) => p.ms)))}, slowest ${fmt(Math.max(...ok.map((p) => p.ms)))}${failed.length ? `; ${failed.length} FAILED: ${failed[0]}` : ''})`]);
    return ok;
  };
  if (values['compare-unbounded']) {
    // The same calls against a second podvisord whose launch bound does not bite (one slot per call).
    other = await startDaemon({ config: `[vm]\nmax_parallel_launches = ${concurrent}\n[daemon]\nboot_timeout_seconds = 900\n[cni]\nconf_dir = "${world.confDir}"\nbin_dirs = ["/usr/lib/cni"]\n${'config' in template ? template.config : ''}`, logLevel: 'info', startTimeoutMs: 180_000 });
    try {
      const ok = await atOnce(`unbounded (max_parallel_launches = ${concurrent})`);
      await removePods(ok.map((p) => p.id));
      for (const p of ok) live.delete(p.id);
    } finally {
      // Pods outlive a daemon: whatever a failure left there is killed before its folders go.
      await other.stop();
      killLeftoverVms(join(other.state, 'vms'));
      await other.dispose();
      other = undefined;
    }
  }
  const ok = await atOnce(`bounded (max_parallel_launches = ${daemonConfig.vm.maxParallelLaunches})`);
  await sleep(settleMs);
  const mN = measureSandboxes(ok.map((p) => p.id));
  summary.push([`PSS per idle sandbox, N=${ok.length} (${idleKind})`, `mean ${describeBreakdown(meanBreakdown(mN))}`]);
  await removePods(ok.map((p) => p.id));
  for (const p of ok) live.delete(p.id);

  // ---------------------------------------------------------------- density climb
  const held: string[] = [];
  const started = performance.now();
  const batch = Math.max(1, Math.min(concurrent, 4));
  let stopped = `the cap of ${maxPods} pods (--max-pods)`;
  climb: while (held.length < maxPods) {
    if (performance.now() - started > maxPodsBudgetMs) {
      stopped = `the time budget of ${maxPodsBudgetMs / 1000} s (--max-pods-budget)`;
      break;
    }
    if (memAvailable() < HOST_RESERVE_BYTES) {
      stopped = `host MemAvailable below the ${mib(HOST_RESERVE_BYTES)} reserve`;
      break;
    }
    const n = Math.min(batch, maxPods - held.length);
    const got = await Promise.allSettled(Array.from({ length: n }, () => runPod(idleHandler)));
    for (const g of got) {
      if (g.status === 'fulfilled') {
        held.push(g.value.id);
        live.add(g.value.id);
      }
    }
    const bad = got.find((g) => g.status === 'rejected');
    if (bad) {
      stopped = `a RunPodSandbox failure: ${messageOf((bad as PromiseRejectedResult).reason)}`;
      break climb;
    }
  }
  const climbMs = performance.now() - started;
  const mMax = held.length > 0 ? meanBreakdown(measureSandboxes(held)) : undefined;
  summary.push([`largest number of idle pods held (${idleKind})`, `${held.length} in ${fmt(climbMs)} (stopped by ${stopped}; mean PSS then ${mMax ? mib(mMax.total) : 'n/a'}, host MemAvailable ${mib(memAvailable())})`]);
  await removePods(held);
  for (const id of held) live.delete(id);

  console.log(`\nstart-up and density (${rounds} rounds, medians through the CRI socket; accelerator ${vmProfile.accel === 'auto' ? 'auto (TCG here unless /dev/kvm works)' : vmProfile.accel})`);
  const w = Math.max(...summary.map(([k]) => k.length));
  for (const [k, v] of summary) console.log(`  ${k.padEnd(w)}  ${v}`);
  if (knobRows.length > 0) {
    console.log('\nmemory knobs (idle pod VM, medians; each against the baseline in this run)');
    const kw = Math.max(...knobRows.map(([k]) => k.length));
    for (const [k, v] of knobRows) console.log(`  ${k.padEnd(kw)}  ${v}`);
  }
  console.log('\nPSS: smaps_rollup of every process naming the sandbox (QEMU, virtiofsd); shared pages split among their mappers;');
  console.log('template RAM files counted whole (resident tmpfs blocks) and divided among the N sandboxes measured together.');
} finally {
  if (env) {
    await removePods([...live]).catch((e) => console.error(`removing pods: ${messageOf(e)}`));
    await env.dispose();
  }
  await world.cleanup(env ? [networksFor(world, join(env.dir, 'state', 'netns'), join(env.dir, 'root', 'cni'))] : []);
}
