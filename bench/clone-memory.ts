// Where an idle template clone's memory goes, per TCG translation cache size (`tb-size`) of the
// clones and per agent V8 flag set, in one run: one template is built per V8 flag set (kernel
// argument podvisor.agent_v8=<name>, images/guest/agent-v8-variants), then for each variant N
// clones are started from it one after the other, left idle, and measured together.
//
// For each variant: clone start (QEMU launch + state load + resume until the agent answers and
// takes a new identity, as RunPodSandbox does), QEMU CPU seconds for that start and for the idle
// wait, QEMU's own TCG figures (`info jit`: translated code, cache flushes), and the idle PSS of
// each clone split by mapping: TCG cache, the clone's own copies of guest RAM, the template
// file's share (its resident size divided among the N clones), QEMU's heap and other anonymous
// memory, and file mappings (binary, libraries). No daemon, CNI or confinement: the same QEMU
// and guest as a sandbox clone, without the pod around it.
//
//   node --import tsx bench/clone-memory.ts [idle=3] [variants=default:32,default:16] [settle-seconds=10] [ksm-seconds=0]
//
// ksm-seconds > 0: after each variant's measurement, KSM (host-wide: /sys/kernel/mm/ksm/run) is
// switched on for that long, the clones are measured again with ksmd's CPU seconds, and KSM is
// switched off with every merged page unmerged again (run=2, then 0), as before the bench.
//
// A variant is <V8 flag set>[+<kernel argument>...]:<clone tb-size MiB>, e.g. jitless+init_on_free=1:16;
// the template itself runs at the configured size.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { AgentClient } from '../src/agent-client/index.js';
import { VmTemplates, type VmTemplate } from '../src/pod/vm-templates.js';
import { agentPortOpened } from '../src/vm/agent-port.js';
import { Vm } from '../src/vm/vm.js';
import { median } from './agent-channel.js';
import { defaultPodProfile } from './bare-boot.js';

const idle = Number(process.argv[2] ?? 3);
const variants = (process.argv[3] ?? 'default:32,default:16').split(',').map((v) => {
  const [guest, tb] = v.split(':');
  const [v8, ...kernelArgs] = guest!.split('+');
  return { v8: v8!, kernelArgs, tb: Number(tb) };
});
const settleMs = Number(process.argv[4] ?? 10) * 1000;
const ksmMs = Number(process.argv[5] ?? 0) * 1000;
const KSM = '/sys/kernel/mm/ksm';
const ksmRead = (f: string) => Number(readFileSync(join(KSM, f), 'utf8').trim());
const ksmWrite = (f: string, v: number) => writeFileSync(join(KSM, f), String(v));
/** ksmd's CPU seconds (a kernel thread: its /proc/<pid>/stat). */
function ksmdCpu(): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === 'ksmd') return cpuSeconds(Number(entry));
    } catch {
      /* gone */
    }
  }
  return NaN;
}
const KB = 1024;
const MiB = 1024 * 1024;
const mib = (b: number) => (b / MiB).toFixed(1);
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const CLK_TCK = 100;

/** QEMU's user+system CPU seconds, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

interface Split {
  tcg: number;
  ownRam: number;
  heap: number;
  otherAnon: number;
  files: number;
  /** Pss of the template file's own (unwritten) pages in this clone's mapping: replaced by the share below. */
  templatePss: number;
  rss: number;
}

/** One clone's smaps, split by what each mapping is. */
function split(pid: number, ramFile: string): Split {
  const s: Split = { tcg: 0, ownRam: 0, heap: 0, otherAnon: 0, files: 0, templatePss: 0, rss: 0 };
  let cur: { perms: string; path: string; size: number; pss: number; anon: number } | undefined;
  const flush = () => {
    if (!cur) return;
    if (cur.path === ramFile) {
      s.ownRam += cur.anon;
      s.templatePss += cur.pss - cur.anon;
    } else if (cur.perms === 'rwxp' && cur.path === '') s.tcg += cur.pss;
    else if (cur.path === '[heap]') s.heap += cur.pss;
    else if (cur.path === '' || cur.path.startsWith('[')) s.otherAnon += cur.pss;
    else s.files += cur.pss;
  };
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      flush();
      cur = { perms: head[3]!, path: head[4] ?? '', size: parseInt(head[2]!, 16) - parseInt(head[1]!, 16), pss: 0, anon: 0 };
      continue;
    }
    const kv = /^(Pss|Anonymous|Rss):\s+(\d+) kB/.exec(line);
    if (!kv || !cur) continue;
    if (kv[1] === 'Pss') cur.pss = Number(kv[2]) * KB;
    else if (kv[1] === 'Anonymous') cur.anon = Number(kv[2]) * KB;
    else s.rss += Number(kv[2]) * KB;
  }
  flush();
  return s;
}

/** `info jit`'s figures that say how much the guest's code was translated. */
async function jitInfo(vm: Vm): Promise<{ tbs: number; codeBytes: number; flushes: number }> {
  const text = await vm.qmp.execute('human-monitor-command', { 'command-line': 'info jit' });
  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  return {
    tbs: num(/TB count\s+(\d+)/),
    codeBytes: num(/gen code size\s+(\d+)/),
    flushes: num(/TB flush count\s+(\d+)/),
  };
}

// A tmpfs, as the template directory should be (src/pod/vm-templates.ts).
const root = '/dev/shm/pvdensity-bench';
rmSync(root, { recursive: true, force: true });
mkdirSync(root, { recursive: true, mode: 0o700 });
const runs = mkdtempSync(join(root, 'runs-'));
const basePodProfile = defaultPodProfile();
const templates = new VmTemplates({
  root: join(root, 'templates'),
  bootTimeoutMs: 600_000,
  connectAgent: async (socketPath, deadline) => AgentClient.connect(socketPath, { deadlineMs: deadline - Date.now() }),
});
const live: Vm[] = [];
let seq = 0;

/** Agent round trips after the idle measurement: the price of an interpreted (jitless) agent. */
const AGENT_CALLS = 300;

async function startClone(template: VmTemplate): Promise<{ vm: Vm; ms: number; cpu: number; agent: AgentClient }> {
  let agent: AgentClient | undefined;
  const t = performance.now();
  const vm = await Vm.launch({
    id: `bench-clone-${process.pid}-${seq++}`,
    runDir: join(runs, String(seq)),
    profile: template.cloneProfile,
    restoreFrom: template.stateFile,
    readyTimeoutMs: 300_000,
    waitReady: async (v, deadline) => {
      const port = agentPortOpened(v.qmp);
      agent = await AgentClient.connect(v.agentSocket, { deadlineMs: deadline - Date.now(), portOpened: port.opened }).finally(() => port.dispose());
    },
  });
  live.push(vm);
  // What RunPodSandbox does first on a clone (src/pod/agent-adapter.ts renewIdentity).
  await agent!.setupSandbox({ clockUnixNanos: Math.round((performance.timeOrigin + performance.now()) * 1e6), entropy: randomBytes(64) });
  const ms = performance.now() - t;
  return { vm, ms, cpu: cpuSeconds(vm.pid), agent: agent! };
}

try {
  console.log(`load average at start: ${loadavg()}`);
  for (const { v8, kernelArgs, tb } of variants) {
    const profile = { ...basePodProfile, kernelArgs: [...basePodProfile.kernelArgs.filter((a) => !a.startsWith('podvisor.agent_v8=')), ...kernelArgs] };
    const t0 = performance.now();
    // One handler per flag set: a template of another handler with the same size is not superseded.
    const template = await templates.forSandbox({ handler: `bench-${[v8, ...kernelArgs].join('-').replace(/[^A-Za-z0-9-]/g, '')}`, profile, nic: false, tuning: { agentV8: v8, cloneTcgTbSizeMiB: tb } });
    if (!template) throw new Error('the template could not be built (see the log)');
    const ramFile = (template.cloneProfile.memory as { memPath: string }).memPath;
    const fileBefore = statSync(ramFile).blocks * 512;
    console.log(`\ntemplate (V8 ${v8}${kernelArgs.map((a) => ` ${a}`).join('')}, tb-size ${profile.tcgTbSizeMiB ?? 'default'}) ready in ${((performance.now() - t0) / 1000).toFixed(1)} s; RAM file ${mib(fileBefore)} MiB resident of ${profile.memoryMiB} MiB`);
    const starts: Array<{ vm: Vm; ms: number; cpu: number; agent: AgentClient }> = [];
    for (let i = 0; i < idle; i++) starts.push(await startClone(template));
    const jitReady = await Promise.all(starts.map((s) => jitInfo(s.vm)));
    const cpuReady = starts.map((s) => cpuSeconds(s.vm.pid));
    await new Promise((r) => setTimeout(r, settleMs));
    const idleCpu = starts.map((s, i) => cpuSeconds(s.vm.pid) - cpuReady[i]!);
    const jit = await Promise.all(starts.map((s) => jitInfo(s.vm)));
    const share = (statSync(ramFile).blocks * 512) / idle;
    const rows = starts.map((s) => split(s.vm.pid, ramFile));
    const m = (f: (r: Split) => number) => median(rows.map(f));
    const total = (r: Split) => r.tcg + r.ownRam + r.heap + r.otherAnon + r.files + share;
    console.log(`V8 ${v8}${kernelArgs.map((a) => ` ${a}`).join('')}, clone tb-size ${tb} MiB, N=${idle} clones (load average ${loadavg()}); template RAM file ${mib(fileBefore)} -> ${mib(share * idle)} MiB resident while they ran:`);
    console.log(`  clone start to agent + new identity: median ${(median(starts.map((s) => s.ms)) / 1000).toFixed(2)} s (all ${starts.map((s) => (s.ms / 1000).toFixed(2)).join(', ')}); QEMU CPU in it median ${median(starts.map((s) => s.cpu)).toFixed(2)} s`);
    console.log(`  idle ${settleMs / 1000} s: QEMU CPU median ${median(idleCpu).toFixed(2)} s`);
    console.log(`  info jit at ready: TBs ${jitReady.map((j) => j.tbs).join('/')}, code ${jitReady.map((j) => mib(j.codeBytes)).join('/')} MiB, flushes ${jitReady.map((j) => j.flushes).join('/')}; after idle: TBs ${jit.map((j) => j.tbs).join('/')}, code ${jit.map((j) => mib(j.codeBytes)).join('/')} MiB, flushes ${jit.map((j) => j.flushes).join('/')}`);
    console.log(`  PSS per clone median ${mib(m(total))} MiB: TCG ${mib(m((r) => r.tcg))}, own guest RAM ${mib(m((r) => r.ownRam))}, template share ${mib(share)}, heap ${mib(m((r) => r.heap))}, other anon ${mib(m((r) => r.otherAnon))}, files ${mib(m((r) => r.files))} (template pages' own Pss in the mapping, replaced by the share: ${mib(m((r) => r.templatePss))})`);
    // The agent at work, one clone at a time: sequential Health calls (ttRPC framing and protobuf in the agent's JavaScript).
    const calls: Array<{ ms: number; cpu: number }> = [];
    for (const s of starts) {
      const cpu0 = cpuSeconds(s.vm.pid);
      const t = performance.now();
      for (let i = 0; i < AGENT_CALLS; i++) await s.agent.health();
      calls.push({ ms: performance.now() - t, cpu: cpuSeconds(s.vm.pid) - cpu0 });
    }
    console.log(`  ${AGENT_CALLS} agent Health calls (load average ${loadavg()}): median ${(median(calls.map((c) => c.ms)) / AGENT_CALLS).toFixed(2)} ms per call, QEMU CPU ${(median(calls.map((c) => c.cpu)) * 1000 / AGENT_CALLS).toFixed(2)} ms per call (all: ${calls.map((c) => `${(c.cpu * 1000 / AGENT_CALLS).toFixed(2)}`).join(', ')})`);
    if (ksmMs > 0 && ksmRead('run') === 0) {
      const cpu0 = ksmdCpu();
      ksmWrite('run', 1);
      try {
        await new Promise((r) => setTimeout(r, ksmMs));
        const after = starts.map((s) => split(s.vm.pid, ramFile));
        const ma = (f: (r: Split) => number) => median(after.map(f));
        console.log(`  KSM on for ${ksmMs / 1000} s (load average ${loadavg()}): ksmd CPU ${(ksmdCpu() - cpu0).toFixed(2)} s, pages_sharing ${ksmRead('pages_sharing')} pages_shared ${ksmRead('pages_shared')} ksm_zero_pages ${ksmRead('ksm_zero_pages')} (host-wide); PSS per clone median ${mib(ma(total))} MiB: TCG ${mib(ma((r) => r.tcg))}, own guest RAM ${mib(ma((r) => r.ownRam))}, heap ${mib(ma((r) => r.heap))}, other anon ${mib(ma((r) => r.otherAnon))}`);
      } finally {
        ksmWrite('run', 2);
        ksmWrite('run', 0);
      }
    }
    for (const s of starts.splice(0)) {
      s.agent.close();
      await s.vm.destroy({ timeoutMs: 5000 }).catch(() => undefined);
      live.splice(live.indexOf(s.vm), 1);
    }
  }
} finally {
  for (const vm of live) await vm.destroy({ timeoutMs: 5000 }).catch(() => undefined);
  await templates.close();
  rmSync(root, { recursive: true, force: true });
}
