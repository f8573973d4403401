import { readdirSync, readFileSync } from 'node:fs';

/** What a VM costs the host, read from its QEMU process in /proc. */
export interface VmProcessUsage {
  /** Resident set of the QEMU process (guest RAM it touched + QEMU itself + TCG's translation cache). */
  rssBytes: number;
  /** Proportional set: shared pages split between the processes that map them (template clones share RAM). */
  pssBytes: number;
  /** CPU time of the vCPU threads ("CPU n/KVM" or "CPU n/TCG"), user + system; null for a QEMU started without debug-threads (thread names unknown). */
  vcpuSeconds: number | null;
  /** CPU time of the whole QEMU process (vCPUs, I/O threads, main loop). */
  cpuSeconds: number;
  threads: number;
}

/** The kernel's clock ticks per second for /proc stat times (USER_HZ; 100 on every Linux ABI). */
const USER_HZ = 100;

/** Reads the usage of QEMU process `pid`; undefined when the process is gone. */
export function vmProcessUsage(pid: number): VmProcessUsage | undefined {
  try {
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? 0) * 1024;
    let vcpuTicks = 0;
    let vcpuThreads = 0;
    let threads = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      threads++;
      let comm: string;
      let stat: string;
      try {
        comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
        stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      } catch {
        continue; // the thread ended while we looked
      }
      if (/^CPU \d+\//.test(comm)) {
        vcpuThreads++;
        vcpuTicks += statTicks(stat);
      }
    }
    return {
      rssBytes: kb('Rss'),
      pssBytes: kb('Pss'),
      vcpuSeconds: vcpuThreads ? vcpuTicks / USER_HZ : null,
      cpuSeconds: statTicks(readFileSync(`/proc/${pid}/stat`, 'utf8')) / USER_HZ,
      threads,
    };
  } catch {
    return undefined;
  }
}

/** utime + stime from a /proc stat line (fields 14 and 15; the command name in parentheses may hold spaces). */
function statTicks(stat: string): number {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** QEMU's command line as it was started (for inspect), or undefined when the process is gone. */
export function processCommandLine(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a, i, all) => a !== '' || i < all.length - 1);
  } catch {
    return undefined;
  }
}
