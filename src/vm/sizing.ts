import { invalidArgument } from '../errors.js';

/**
 * How big a pod's VM is. The VM must hold every container at its limit plus the guest's own
 * needs (kernel, agent, page cache): the sum of the container limits plus a configured
 * overhead, and never less than the profile's default (a container without a limit counts
 * as zero and lives within the default). Sizes beyond the profile's bounds are refused
 * before anything starts. Pod-level totals (LinuxPodSandboxConfig.resources) can be passed
 * as a single entry.
 */

export interface ContainerLimits {
  /** CPU limit in millicores; or give the CFS quota and period as the CRI does. */
  milliCpu?: number;
  cpuQuota?: number;
  cpuPeriod?: number;
  memoryBytes?: number;
}

export interface SizingPolicy {
  defaultVcpus: number;
  defaultMemoryMiB: number;
  /** Added to the containers' sum (guest kernel, agent, crun). */
  overheadVcpus: number;
  overheadMemoryMiB: number;
  maxVcpus: number;
  maxMemoryMiB: number;
}

export interface VmSize {
  vcpus: number;
  memoryMiB: number;
}

const MIB = 1024 * 1024;

export function milliCpuOf(c: ContainerLimits): number | undefined {
  if (c.milliCpu !== undefined) return nonNegative('milliCpu', c.milliCpu) || undefined;
  const quota = c.cpuQuota ?? 0;
  const period = c.cpuPeriod ?? 0;
  // The CRI uses quota <= 0 (and period 0) for "no limit".
  if (quota <= 0 || period <= 0) return undefined;
  return Math.ceil((quota * 1000) / period);
}

export function sizeVm(containers: ContainerLimits[], policy: SizingPolicy): VmSize {
  checkPolicy(policy);
  let milliCpu = 0;
  let memoryBytes = 0;
  for (const c of containers) {
    milliCpu += milliCpuOf(c) ?? 0;
    memoryBytes += c.memoryBytes === undefined ? 0 : nonNegative('memoryBytes', c.memoryBytes);
  }
  const size: VmSize = {
    vcpus: Math.max(policy.defaultVcpus, Math.ceil(milliCpu / 1000) + policy.overheadVcpus),
    memoryMiB: Math.max(policy.defaultMemoryMiB, Math.ceil(memoryBytes / MIB) + policy.overheadMemoryMiB),
  };

  if (size.vcpus > policy.maxVcpus) {
    throw invalidArgument(
      `pod needs ${size.vcpus} vCPUs (container CPU limits ${milliCpu}m + overhead ${policy.overheadVcpus}), ` +
        `more than the ${policy.maxVcpus} a VM may have (max_vcpus); lower the containers' CPU limits`,
    );
  }
  if (size.memoryMiB > policy.maxMemoryMiB) {
    throw invalidArgument(
      `pod needs ${size.memoryMiB} MiB of memory (container limits ${Math.ceil(memoryBytes / MIB)} MiB + overhead ` +
        `${policy.overheadMemoryMiB} MiB), more than the ${policy.maxMemoryMiB} MiB a VM may have (max_memory_mib); lower the containers' memory limits`,
    );
  }
  return size;
}

function nonNegative(field: string, v: number): number {
  if (!Number.isFinite(v) || v < 0) throw invalidArgument(`container ${field} must be a non-negative number, got ${v}`);
  return v;
}

function checkPolicy(p: SizingPolicy): void {
  for (const [k, v] of Object.entries(p)) {
    if (!Number.isInteger(v) || v < 0) throw invalidArgument(`VM sizing: ${k} must be a non-negative integer, got ${v}`);
  }
  if (p.maxVcpus < 1 || p.defaultVcpus < 1) throw invalidArgument('VM sizing: defaultVcpus and maxVcpus must be at least 1');
  if (p.defaultVcpus > p.maxVcpus) throw invalidArgument(`VM sizing: defaultVcpus ${p.defaultVcpus} exceeds maxVcpus ${p.maxVcpus}`);
  if (p.defaultMemoryMiB > p.maxMemoryMiB) {
    throw invalidArgument(`VM sizing: defaultMemoryMiB ${p.defaultMemoryMiB} exceeds maxMemoryMiB ${p.maxMemoryMiB}`);
  }
}
