import { invalidArgument, resourceExhausted } from '../errors.js';
import type { RuntimeProfileConfig } from '../config/config.js';
import type { VmProfile } from '../vm/profile.js';
import type { LinuxResources } from './records.js';

const MiB = 1024 * 1024;

/** The runtime handler's profile; "" and "kata" always exist, others come from the config. */
export function profileForHandler(handler: string, runtimes: Record<string, RuntimeProfileConfig>): RuntimeProfileConfig {
  const p = runtimes[handler];
  if (!p) {
    const known = Object.keys(runtimes).map((h) => JSON.stringify(h)).join(', ');
    throw invalidArgument(`unknown runtime handler ${JSON.stringify(handler)}: podvisor knows ${known}; ` +
      'add a [runtimes.<name>] table to the config for another one');
  }
  return p;
}

/**
 * The VM's size from what kubelet says the pod needs: the sum of container
 * limits (LinuxPodSandboxConfig.resources) plus the pod overhead, plus the
 * guest's own overhead (kernel, agent). Never smaller than the profile's
 * defaults; beyond the profile's maximum is an error, not a silent cap.
 */
export function sizeVm(p: RuntimeProfileConfig, resources?: LinuxResources, overhead?: LinuxResources): { vcpus: number; memoryMiB: number } {
  let vcpus = p.vcpus;
  let memoryMiB = p.memoryMiB;
  const quota = (resources?.cpuQuota ?? 0) + (overhead?.cpuQuota ?? 0);
  const period = resources?.cpuPeriod || overhead?.cpuPeriod || 100_000;
  if (quota > 0) vcpus = Math.max(vcpus, Math.ceil(quota / period));
  const limit = (resources?.memoryLimitInBytes ?? 0) + (overhead?.memoryLimitInBytes ?? 0);
  if (limit > 0) memoryMiB = Math.max(memoryMiB, Math.ceil(limit / MiB) + p.overheadMemoryMiB);
  if (vcpus > p.maxVcpus) {
    throw resourceExhausted(`the pod asks for ${vcpus} CPUs but this runtime handler allows at most ${p.maxVcpus} per pod VM (max_vcpus)`);
  }
  if (memoryMiB > p.maxMemoryMiB) {
    throw resourceExhausted(`the pod needs ${memoryMiB} MiB (limits + ${p.overheadMemoryMiB} MiB guest overhead) but this runtime handler allows at most ${p.maxMemoryMiB} MiB per pod VM (max_memory_mib)`);
  }
  return { vcpus, memoryMiB };
}

export function vmProfileFor(p: RuntimeProfileConfig, size: { vcpus: number; memoryMiB: number }): VmProfile {
  return {
    machine: p.machine,
    vcpus: size.vcpus,
    memoryMiB: size.memoryMiB,
    kernel: p.kernel,
    initrd: p.initrd,
    systemDisk: p.systemDisk,
    kernelArgs: p.kernelArgs,
    accel: p.accel,
    memory: { kind: 'anonymous' },
  };
}
