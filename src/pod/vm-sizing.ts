import { invalidArgument } from '../errors.js';
import { sizeVm, type VmSize } from '../vm/sizing.js';
import type { RuntimeProfileConfig } from '../config/config.js';
import type { VmProfile } from '../vm/profile.js';
import type { LinuxResources, SandboxConfig } from './records.js';
import type { TemplateTuning } from './vm-templates.js';

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

/**
 * containerd's sandbox sizing annotations, which VM runtimes behind containerd
 * (Kata) read: the pod totals when a client sends them as annotations rather
 * than in linux.resources. Tenants can set pod annotations, so the values are
 * checked here and the result stays within the profile's bounds in sizePodVm.
 */
export const SANDBOX_ANNOTATIONS = {
  cpuPeriod: 'io.kubernetes.cri.sandbox-cpu-period',
  cpuQuota: 'io.kubernetes.cri.sandbox-cpu-quota',
  cpuShares: 'io.kubernetes.cri.sandbox-cpu-shares',
  memory: 'io.kubernetes.cri.sandbox-memory',
} as const;

/** The pod totals the VM is sized from: linux.resources when kubelet sent them, else the sandbox-* annotations. */
export function podResources(config: Pick<SandboxConfig, 'resources' | 'annotations'>): LinuxResources | undefined {
  if (config.resources) return config.resources;
  const a = config.annotations ?? {};
  if (!Object.values(SANDBOX_ANNOTATIONS).some((k) => a[k] !== undefined)) return undefined;
  const num = (key: string): number => {
    const v = a[key];
    if (v === undefined || v === '') return 0;
    if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw invalidArgument(`annotation ${key}=${JSON.stringify(v)} is not an integer`);
    return Number(v);
  };
  return {
    cpuPeriod: num(SANDBOX_ANNOTATIONS.cpuPeriod),
    cpuQuota: num(SANDBOX_ANNOTATIONS.cpuQuota),
    cpuShares: num(SANDBOX_ANNOTATIONS.cpuShares),
    memoryLimitInBytes: num(SANDBOX_ANNOTATIONS.memory),
    oomScoreAdj: 0,
    cpusetCpus: '',
    cpusetMems: '',
  };
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
    ...(p.tcgTbSizeMiB > 0 ? { tcgTbSizeMiB: p.tcgTbSizeMiB } : {}),
    ...(p.freePageReporting ? { freePageReporting: true } : {}),
  };
}

/** What a handler's VM template and its clones run with instead of its cold VMs' profile. */
export function templateTuningFor(p: RuntimeProfileConfig): TemplateTuning {
  return {
    ...(p.cloneTcgTbSizeMiB > 0 ? { cloneTcgTbSizeMiB: p.cloneTcgTbSizeMiB } : {}),
    agentV8: p.templateAgentV8,
  };
}
