/**
 * What an idle sandbox costs the host, from /proc: every process whose command line names
 * the sandbox id (its QEMU, and its virtiofsd, whose socket lives in a directory named after
 * the id), summed from /proc/<pid>/smaps_rollup.
 *
 * How shared pages are counted:
 *  - Pss already splits a page among the processes that map it: the guest RAM memfd that
 *    QEMU and virtiofsd both map is counted once per sandbox (half in each), the QEMU binary
 *    and its libraries are split among every QEMU on the host.
 *  - A template clone maps the template's RAM file privately (`share=off`): pages it never
 *    wrote stay the file's, shared with every other clone, and pages of the file no clone
 *    touched are resident but in nobody's Pss. So for clones the Pss of the file's pages in
 *    that mapping (from /proc/<pid>/smaps: the mapping's Pss minus its Anonymous pages, which
 *    are the clone's own copies and stay its own) is taken out, and the file's whole resident
 *    size (tmpfs blocks) is divided among the N sandboxes measured together instead.
 *
 * The split printed with it says where the memory goes: guest RAM the guest touched (the
 * memfd / template file / anonymous RAM mapping of the VM's memory size), the TCG translation
 * cache (QEMU's one rwx mapping), and the rest of QEMU (its heap, device state, libraries).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';

export interface MemoryBreakdown {
  /** Bytes charged to this sandbox (template share included). */
  total: number;
  /** Guest RAM the guest touched (private part for clones). */
  guestRam: number;
  /** The TCG translation cache (code_gen_buffer). */
  tcg: number;
  /** Everything else: QEMU's heap and device state, binaries, virtiofsd. */
  rest: number;
  /** This sandbox's share of template RAM files (0 for cold VMs). */
  templateShare: number;
}

interface Mapping {
  start: number;
  size: number;
  perms: string;
  path: string;
  pss: number;
  /** Anonymous pages in the mapping: for a private file mapping, the pages this process wrote (its copies). */
  anon: number;
}

const KB = 1024;

/** Pids of live processes whose command line mentions `needle`. */
export function pidsMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (argv.includes(needle)) pids.push(Number(entry));
    } catch {
      /* exited while we looked */
    }
  }
  return pids;
}

function cmdline(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
}

function isQemu(argv: string[]): boolean {
  return /qemu-system/.test(argv[0] ?? '');
}

/** Per-mapping Pss from /proc/<pid>/smaps. */
function mappings(pid: number): Mapping[] {
  const out: Mapping[] = [];
  let cur: Mapping | undefined;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const start = parseInt(head[1]!, 16);
      cur = { start, size: parseInt(head[2]!, 16) - start, perms: head[3]!, path: head[4] ?? '', pss: 0, anon: 0 };
      out.push(cur);
      continue;
    }
    const pss = /^Pss:\s+(\d+) kB/.exec(line);
    if (pss && cur) cur.pss = Number(pss[1]) * KB;
    const anon = /^Anonymous:\s+(\d+) kB/.exec(line);
    if (anon && cur) cur.anon = Number(anon[1]) * KB;
  }
  return out;
}

function rollupPss(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) * KB : 0;
}

/** QEMU's RAM backend from its command line: `-m` size and, for file RAM, the path and sharing. */
function ramOf(argv: string[]): { bytes: number; memPath?: string; shared: boolean } {
  const m = argv[argv.indexOf('-m') + 1] ?? '';
  const mib = /^(\d+)M$/.exec(m);
  const backend = argv.find((a) => a.startsWith('memory-backend-file,')) ?? '';
  const memPath = /(?:^|,)mem-path=([^,]+)/.exec(backend)?.[1];
  return { bytes: mib ? Number(mib[1]) * 1024 * 1024 : 0, memPath, shared: /(?:^|,)share=on/.test(backend) };
}

/** Bytes of a tmpfs file that are in memory (its allocated blocks). */
function residentBytes(path: string): number {
  try {
    return statSync(path).blocks * 512;
  } catch {
    return 0;
  }
}

/**
 * The memory of the sandboxes `ids`, measured together (the template share is divided among
 * them). Returns one breakdown per id, in order.
 */
export function measureSandboxes(ids: string[]): MemoryBreakdown[] {
  const templateFiles = new Set<string>();
  const rows = ids.map((id) => {
    const row: MemoryBreakdown = { total: 0, guestRam: 0, tcg: 0, rest: 0, templateShare: 0 };
    for (const pid of pidsMentioning(id)) {
      try {
        const pss = rollupPss(pid);
        row.total += pss;
        const argv = cmdline(pid);
        if (!isQemu(argv)) {
          // virtiofsd: its Pss of the shared guest RAM memfd is guest RAM; the rest is its own.
          for (const m of mappings(pid)) (m.path.startsWith('/memfd:') ? (row.guestRam += m.pss) : undefined);
          continue;
        }
        const ram = ramOf(argv);
        const clonedFrom = ram.memPath && !ram.shared ? ram.memPath : undefined;
        for (const m of mappings(pid)) {
          if (clonedFrom && m.path === clonedFrom) {
            // The clone's own copies (pages it wrote) are its guest RAM; the file's pages are charged below, once for all clones.
            row.total -= m.pss - m.anon;
            row.guestRam += m.anon;
            templateFiles.add(clonedFrom);
            continue;
          }
          if (m.perms === 'rwxp' && m.path === '') row.tcg += m.pss;
          else if (m.size === ram.bytes || m.path.startsWith('/memfd:') || (ram.memPath && m.path === ram.memPath)) row.guestRam += m.pss;
        }
      } catch {
        /* the process ended while we looked */
      }
    }
    return row;
  });
  // Template files: resident size split among the clones measured here.
  for (const file of templateFiles.keys()) {
    const share = residentBytes(file) / ids.length;
    for (const row of rows) {
      row.templateShare += share;
      row.total += share;
    }
  }
  for (const row of rows) row.rest = row.total - row.guestRam - row.tcg - row.templateShare;
  return rows;
}

export const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

/** The mean of each field. */
export function meanBreakdown(rows: MemoryBreakdown[]): MemoryBreakdown {
  const n = Math.max(1, rows.length);
  const sum = (k: keyof MemoryBreakdown) => rows.reduce((a, r) => a + r[k], 0) / n;
  return { total: sum('total'), guestRam: sum('guestRam'), tcg: sum('tcg'), rest: sum('rest'), templateShare: sum('templateShare') };
}

export function describeBreakdown(b: MemoryBreakdown): string {
  const parts = [`guest RAM ${mib(b.guestRam)}`, `TCG cache ${mib(b.tcg)}`, `QEMU+helpers ${mib(b.rest)}`];
  if (b.templateShare > 0) parts.push(`template file share ${mib(b.templateShare)}`);
  return `${mib(b.total)} (${parts.join(', ')})`;
}
