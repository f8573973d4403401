import { readdirSync, readFileSync } from 'node:fs';
import type { LinuxResources } from '../src/agent-protocol/types.js';
import { invalidArgument } from '../src/errors.js';

/** The OCI runtime spec's linux.resources, as much of it as the CRI can set. */
export interface OciResources {
  cpu?: { shares?: number; quota?: number; period?: number; cpus?: string; mems?: string };
  memory?: { limit?: number; swap?: number };
  hugepageLimits?: Array<{ pageSize: string; limit: number }>;
  unified?: Record<string, string>;
}

/** cgroup v2 file names a request may set through `unified`: the container's own limit files, nothing that moves processes. */
const UNIFIED_ALLOWED = /^(cpu|cpuset|memory|pids|io|hugetlb)\.[a-z0-9_.]+$/;
const UNIFIED_REFUSED = new Set(['cgroup.procs', 'cgroup.threads', 'cgroup.subtree_control']);

/**
 * Turns the host's request into OCI linux.resources for `crun update`. Zero
 * means "leave it" (the CRI has no presence bits for these numbers), except
 * a quota of -1, which lifts the CPU limit.
 */
export function ociResources(r: LinuxResources): OciResources {
  // crun 1.8 ignores a negative quota; "max" in cpu.max is how cgroup v2 lifts the limit (with the period, if one is given).
  const liftQuota = (r.cpuQuota ?? 0) < 0;
  const out: OciResources = {};
  const cpu: NonNullable<OciResources['cpu']> = {};
  if (r.cpuShares) cpu.shares = positive('cpu_shares', r.cpuShares);
  if (r.cpuQuota && !liftQuota) cpu.quota = positive('cpu_quota', r.cpuQuota);
  if (r.cpuPeriod && !liftQuota) cpu.period = positive('cpu_period', r.cpuPeriod);
  if (r.cpusetCpus) cpu.cpus = cpuset('cpuset_cpus', r.cpusetCpus);
  if (r.cpusetMems) cpu.mems = cpuset('cpuset_mems', r.cpusetMems);
  if (Object.keys(cpu).length) out.cpu = cpu;
  const memory: NonNullable<OciResources['memory']> = {};
  if (r.memoryLimitBytes) memory.limit = positive('memory_limit_in_bytes', r.memoryLimitBytes);
  if (r.memorySwapLimitBytes) memory.swap = r.memorySwapLimitBytes < 0 ? -1 : positive('memory_swap_limit_in_bytes', r.memorySwapLimitBytes);
  if (Object.keys(memory).length) out.memory = memory;
  if (r.hugepageLimits?.length) {
    out.hugepageLimits = r.hugepageLimits.map((h) => {
      if (!/^[0-9]+[KMG]B$/.test(h.pageSize)) throw invalidArgument(`hugepage page size ${JSON.stringify(h.pageSize)} is not like "2MB" or "1GB"`);
      return { pageSize: h.pageSize, limit: h.limitBytes };
    });
  }
  const unified = Object.entries(r.unified ?? {});
  if (liftQuota) unified.push(['cpu.max', r.cpuPeriod ? `max ${positive('cpu_period', r.cpuPeriod)}` : 'max']);
  if (unified.length) {
    for (const [k] of unified) {
      if (!UNIFIED_ALLOWED.test(k) || UNIFIED_REFUSED.has(k)) throw invalidArgument(`cgroup file ${JSON.stringify(k)} cannot be set on a container (only cpu., cpuset., memory., pids., io. and hugetlb. limits)`);
    }
    out.unified = Object.fromEntries(unified);
  }
  return out;
}

/** A container spec's resources with an update laid over them (what crun would apply at start). */
export function mergeResources(base: OciResources | undefined, update: OciResources): OciResources {
  const b = { ...base };
  // A lifted quota (cpu.max "max") replaces any quota and period from before.
  if (update.unified?.['cpu.max'] && b.cpu) b.cpu = Object.fromEntries(Object.entries(b.cpu).filter(([k]) => k !== 'quota' && k !== 'period'));
  return {
    ...b,
    ...(update.cpu || b.cpu ? { cpu: { ...b.cpu, ...update.cpu } } : {}),
    ...(update.memory || b.memory ? { memory: { ...b.memory, ...update.memory } } : {}),
    ...(update.hugepageLimits ? { hugepageLimits: update.hugepageLimits } : {}),
    ...(update.unified || b.unified ? { unified: { ...b.unified, ...update.unified } } : {}),
  };
}

const LIMIT_FILES = ['cpu.max', 'cpu.weight', 'cpuset.cpus', 'cpuset.mems', 'memory.max', 'memory.swap.max', 'memory.high', 'pids.max'];

/** The limit files of a container's cgroup as the kernel now has them; files the kernel lacks are left out. */
export function readLimits(cgroupDir: string): Record<string, string> {
  const out: Record<string, string> = {};
  let hugetlb: string[] = [];
  try {
    hugetlb = readdirSync(cgroupDir).filter((f) => /^hugetlb\.[0-9]+[KMG]B\.max$/.test(f));
  } catch {
    return out; // no cgroup (a container not started yet)
  }
  for (const f of [...LIMIT_FILES, ...hugetlb]) {
    try {
      out[f] = readFileSync(`${cgroupDir}/${f}`, 'utf8').trim();
    } catch {
      // controller not enabled here
    }
  }
  return out;
}

function positive(field: string, v: number): number {
  if (!Number.isSafeInteger(v) || v <= 0) throw invalidArgument(`${field} must be a positive integer, got ${v}`);
  return v;
}

function cpuset(field: string, v: string): string {
  if (!/^[0-9,-]+$/.test(v)) throw invalidArgument(`${field} ${JSON.stringify(v)} is not a CPU or node list like "0-1,3"`);
  return v;
}
