import { failedPrecondition, invalidArgument } from '../errors.js';
import { logger } from '../log.js';
import type { PodContext } from './pod-context.js';
import type { LinuxResources } from './records.js';
import { podResources, profileForHandler, sizePodVm } from './vm-sizing.js';

const log = logger('pod-resources');

/**
 * In-place resize. A container's limits change in its guest cgroup while it
 * runs (kubelet wants an error rather than a restart). The VM itself is fixed
 * at the size it booted with: QEMU 7.2's microvm hot-plugs neither vCPUs
 * (no CPU hot-plug handler) nor memory (no pc-dimm, no virtio-mem without PCI,
 * no hot-pluggable balloon), measured on this QEMU; so a pod-level resize is
 * accepted only while the pod still fits the VM.
 */
export class ResourcesService {
  constructor(private readonly ctx: PodContext) {}

  /** Applies new limits to a created or running container; answers the guest's limit files after the change. */
  async updateContainer(query: string, resources: LinuxResources): Promise<Record<string, string>> {
    const c = this.ctx.index.container(query);
    return this.ctx.locks.run(c.id, async () => {
      if (c.state !== 'created' && c.state !== 'running') {
        throw failedPrecondition(`container ${c.id} is ${c.state.toUpperCase()}; only a created or running container's resources can change`);
      }
      if (resources.memoryLimitInBytes < 0 || resources.cpuShares < 0 || resources.cpuPeriod < 0) {
        throw invalidArgument('memory_limit_in_bytes, cpu_shares and cpu_period cannot be negative');
      }
      const rt = this.ctx.runtimes.get(c.sandboxId);
      if (!rt) throw failedPrecondition(`the VM of sandbox ${c.sandboxId} is not running`);
      const cgroup = await rt.agent.updateContainerResources(c.id, resources);
      // What the container now runs with: the new values where the request set them, the old ones elsewhere
      // (the CRI's zero means "not set"). ContainerStatus.resources reports this.
      c.config.resources = mergeResources(c.config.resources, resources);
      await this.ctx.store.saveContainer(c);
      log.info({ container: c.id, cgroup }, 'container resources changed in place');
      return cgroup;
    });
  }

  /**
   * kubelet's pod-level totals after a resize. The VM cannot grow, so new totals
   * that need more vCPUs or memory than it booted with are refused, naming both;
   * totals that fit are recorded (PodSandboxStatus shows them).
   */
  async updateSandbox(query: string, update: { resources?: LinuxResources; overhead?: LinuxResources }): Promise<void> {
    const s = this.ctx.index.sandbox(query);
    await this.ctx.locks.run(s.id, async () => {
      if (s.state !== 'ready' || !s.vm) throw failedPrecondition(`sandbox ${s.id} is not ready; its resources cannot change`);
      const profile = profileForHandler(s.runtimeHandler, this.ctx.settings.runtimes);
      const resources = update.resources ?? podResources(s.config);
      const overhead = update.overhead ?? s.config.overhead;
      const need = sizePodVm(profile, resources, overhead);
      if (need.vcpus > s.vm.vcpus || need.memoryMiB > s.vm.memoryMiB) {
        throw failedPrecondition(
          `sandbox ${s.id}: the new pod resources need a VM of ${need.vcpus} vCPUs and ${need.memoryMiB} MiB, but its VM booted with ` +
            `${s.vm.vcpus} vCPUs and ${s.vm.memoryMiB} MiB and cannot grow (QEMU microvm has no vCPU or memory hot-plug); recreate the pod to resize it`,
        );
      }
      s.config.resources = resources;
      s.config.overhead = overhead;
      await this.ctx.store.saveSandbox(s);
      log.info({ sandbox: s.id, need, vm: { vcpus: s.vm.vcpus, memoryMiB: s.vm.memoryMiB } }, 'pod resources updated within the fixed VM size');
    });
  }
}

function mergeResources(base: LinuxResources | undefined, update: LinuxResources): LinuxResources {
  const pick = (next: number, prev: number | undefined) => (next !== 0 ? next : prev ?? 0);
  return {
    cpuPeriod: pick(update.cpuPeriod, base?.cpuPeriod),
    cpuQuota: pick(update.cpuQuota, base?.cpuQuota),
    cpuShares: pick(update.cpuShares, base?.cpuShares),
    memoryLimitInBytes: pick(update.memoryLimitInBytes, base?.memoryLimitInBytes),
    oomScoreAdj: base?.oomScoreAdj ?? 0, // fixed at start: the OCI process setting, not a cgroup limit
    cpusetCpus: update.cpusetCpus || base?.cpusetCpus || '',
    cpusetMems: update.cpusetMems || base?.cpusetMems || '',
    memorySwapLimitInBytes: pick(update.memorySwapLimitInBytes ?? 0, base?.memorySwapLimitInBytes),
    hugepageLimits: update.hugepageLimits?.length ? update.hugepageLimits : base?.hugepageLimits ?? [],
    unified: { ...base?.unified, ...update.unified },
  };
}
