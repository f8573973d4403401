import { GUEST_CONTAINERS_DIR } from '../agent-protocol/guest-paths.js';
import type { ContainerStatsView, SandboxStatsView } from '../pod/stats-service.js';
import { containerFilterFromCri } from './containers.js';
import { requireId } from './fields.js';
import type { ContainerStats } from './generated/runtime/v1/ContainerStats.js';
import type { PodSandboxStats } from './generated/runtime/v1/PodSandboxStats.js';
import type { RuntimeRpc } from './rpc.js';
import { sandboxFilterFromCri } from './sandboxes.js';

/**
 * The stats RPCs of RuntimeService (container and pod sandbox stats) and
 * their response mapping. The numbers come from the guest through
 * src/pod/stats-service.ts (`svc.pods.stats`).
 */

// ---- handlers ----

export const containerStats: RuntimeRpc<'ContainerStats'> = async (svc, req) => ({
  stats: containerStatsToCri(await svc.pods.stats.containerStats(requireId(req.container_id, 'container_id'))),
});

export const listContainerStats: RuntimeRpc<'ListContainerStats'> = async (svc, req) => ({
  stats: (await svc.pods.stats.listContainerStats(containerFilterFromCri(req.filter))).map(containerStatsToCri),
});

export const podSandboxStats: RuntimeRpc<'PodSandboxStats'> = async (svc, req) => ({
  stats: sandboxStatsToCri(await svc.pods.stats.sandboxStats(requireId(req.pod_sandbox_id, 'pod_sandbox_id'))),
});

export const listPodSandboxStats: RuntimeRpc<'ListPodSandboxStats'> = async (svc, req) => ({
  stats: (await svc.pods.stats.listSandboxStats(sandboxFilterFromCri(req.filter))).map(sandboxStatsToCri),
});

// ---- response mapping ----

const u64 = (v: number | bigint) => ({ value: String(v) });
const nanos = (ms: number) => (BigInt(Math.round(ms * 1000)) * 1000n).toString();

export function containerStatsToCri(v: ContainerStatsView): ContainerStats {
  const c = v.container;
  const s = v.stats;
  const ts = nanos(s.timestampMs);
  return {
    attributes: { id: c.id, metadata: { name: c.config.metadata.name, attempt: c.config.metadata.attempt }, labels: c.config.labels, annotations: c.config.annotations },
    cpu: { timestamp: ts, usage_core_nano_seconds: u64(s.cpuUsageNanos), ...(v.usageNanoCores !== undefined ? { usage_nano_cores: u64(v.usageNanoCores) } : {}) },
    memory: {
      timestamp: ts,
      working_set_bytes: u64(s.memoryWorkingSetBytes),
      usage_bytes: u64(s.memoryUsageBytes),
      rss_bytes: u64(s.memoryRssBytes),
      ...(s.memoryAvailableBytes !== undefined ? { available_bytes: u64(s.memoryAvailableBytes) } : {}),
      page_faults: u64(s.pageFaults),
      major_page_faults: u64(s.majorPageFaults),
    },
    ...(s.writableLayer ? {
      writable_layer: {
        timestamp: ts,
        fs_id: { mountpoint: `${GUEST_CONTAINERS_DIR}/${c.id}` },
        used_bytes: u64(s.writableLayer.bytes),
        inodes_used: u64(s.writableLayer.inodes),
      },
    } : {}),
  };
}

export function sandboxStatsToCri(v: SandboxStatsView): PodSandboxStats {
  const s = v.sandbox;
  const g = v.guest;
  const ts = nanos(g.timestampMs);
  const m = s.config.metadata;
  return {
    attributes: { id: s.id, metadata: { name: m.name, namespace: m.namespace, uid: m.uid, attempt: m.attempt }, labels: s.config.labels, annotations: s.config.annotations },
    linux: {
      cpu: { timestamp: ts, usage_core_nano_seconds: u64(g.cpuUsageNanos), ...(v.usageNanoCores !== undefined ? { usage_nano_cores: u64(v.usageNanoCores) } : {}) },
      memory: {
        timestamp: ts,
        working_set_bytes: u64(g.memoryWorkingSetBytes),
        usage_bytes: u64(g.memoryUsageBytes),
        rss_bytes: u64(g.memoryRssBytes),
        page_faults: u64(g.pageFaults),
        major_page_faults: u64(g.majorPageFaults),
      },
      process: { timestamp: ts, process_count: u64(g.processCount) },
      containers: v.containers.map(containerStatsToCri),
    },
  };
}
