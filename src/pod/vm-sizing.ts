import { invalidArgument } from '../errors.js';
import { sizeVm, type VmSize } from '../vm/sizing.js';
import type { RuntimeProfileConfig } from '../config/config.js';
import type { VmProfile } from '../vm/profile.js';
import type { LinuxResources } from './records.js';

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
 * The VM's size from what kubelet says the pod needs: its container limits
 * (LinuxPodSandboxConfig.resources) and the pod overhead, by the VM manager's
 * one sizing rule with this handler's defaults, guest overhead and bounds.
 */
export function sizePodVm(p: RuntimeProfileConfig, resources?: LinuxResources, overhead?: LinuxResources): VmSize {
  const asLimits = (r: LinuxResources | undefined) =>
    r ? [{ cpuQuota: r.cpuQuota, cpuPeriod: r.cpuPeriod || 100_000, memoryBytes: r.memoryLimitInBytes }] : [];
  return sizeVm([...asLimits(resources), ...asLimits(overhead)], {
    defaultVcpus: p.vcpus,
    defaultMemoryMiB: p.memoryMiB,
    overheadVcpus: 0,
    overheadMemoryMiB: p.overheadMemoryMiB,
    maxVcpus: p.maxVcpus,
    maxMemoryMiB: p.maxMemoryMiB,
  });
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
