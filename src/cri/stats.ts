import { GUEST_CONTAINERS_DIR } from '../agent-protocol/guest-paths.js';
import type { GuestStats, Pressure, PressureLine } from '../pod/guest-agent.js';
import type { ContainerStatsView, SandboxStatsView } from '../pod/stats-service.js';
import { containerFilterFromCri } from './containers.js';
import { requireId } from './fields.js';
import type { ContainerStats } from './generated/runtime/v1/ContainerStats.js';
import type { PodSandboxStats } from './generated/runtime/v1/PodSandboxStats.js';
import type { Metric } from './generated/runtime/v1/Metric.js';
import type { MetricDescriptor } from './generated/runtime/v1/MetricDescriptor.js';
import type { PodSandboxMetrics } from './generated/runtime/v1/PodSandboxMetrics.js';
import type { PsiData } from './generated/runtime/v1/PsiData.js';
import type { PsiStats } from './generated/runtime/v1/PsiStats.js';
import { sendChunks } from './list-stream.js';
import type { RuntimeRpc } from './rpc.js';
import { sandboxFilterFromCri } from './sandboxes.js';

/**
 * The stats RPCs of RuntimeService (container and pod sandbox stats, the
 * metrics RPCs and their Stream* forms) and their response mapping. The numbers come from the guest through
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

export const listMetricDescriptors: RuntimeRpc<'ListMetricDescriptors'> = async () => ({
  descriptors: SERIES.map((s): MetricDescriptor => ({ name: s.name, help: s.help, label_keys: METRIC_LABELS })),
});

export const listPodSandboxMetrics: RuntimeRpc<'ListPodSandboxMetrics'> = async (svc) => ({
  pod_metrics: (await svc.pods.stats.listSandboxStats({})).map(podMetricsToCri),
});

export const streamContainerStats: RuntimeRpc<'StreamContainerStats'> = async (svc, req, call) => {
  const list = await svc.pods.stats.listContainerStats(containerFilterFromCri(req.filter));
  await sendChunks(list.map(containerStatsToCri), call, (container_stats) => ({ container_stats }));
};

export const streamPodSandboxStats: RuntimeRpc<'StreamPodSandboxStats'> = async (svc, req, call) => {
  const list = await svc.pods.stats.listSandboxStats(sandboxFilterFromCri(req.filter));
  await sendChunks(list.map(sandboxStatsToCri), call, (pod_sandbox_stats) => ({ pod_sandbox_stats }));
};

export const streamPodSandboxMetrics: RuntimeRpc<'StreamPodSandboxMetrics'> = async (svc, _req, call) => {
  const list = await svc.pods.stats.listSandboxStats({});
  await sendChunks(list.map(podMetricsToCri), call, (pod_sandbox_metrics) => ({ pod_sandbox_metrics }));
};

// ---- response mapping ----

const u64 = (v: number | bigint) => ({ value: String(v) });
const nanos = (ms: number) => (BigInt(Math.round(ms * 1000)) * 1000n).toString();

const psiLine = (l: PressureLine): PsiData => ({ Total: String(l.totalUsec), Avg10: l.avg10, Avg60: l.avg60, Avg300: l.avg300 });
const psi = (p: Pressure | undefined): { psi?: PsiStats } =>
  p ? { psi: { ...(p.full ? { Full: psiLine(p.full) } : {}), ...(p.some ? { Some: psiLine(p.some) } : {}) } } : {};
/** Page faults only where the guest counted them: an unset value, never a made-up 0. */
const faults = (s: GuestStats) => (s.pageFaults !== undefined
  ? { page_faults: u64(s.pageFaults), major_page_faults: u64(s.majorPageFaults ?? 0) } : {});

export function containerStatsToCri(v: ContainerStatsView): ContainerStats {
  const c = v.container;
  const attributes = { id: c.id, metadata: { name: c.config.metadata.name, attempt: c.config.metadata.attempt }, labels: c.config.labels, annotations: c.config.annotations };
  const s = v.stats;
  // Not sampled yet (its guest missed every deadline so far): listed, with no usage.
  if (!s) return { attributes };
  const ts = nanos(s.timestampMs);
  return {
    attributes,
    cpu: { timestamp: ts, usage_core_nano_seconds: u64(s.cpuUsageNanos), ...(v.usageNanoCores !== undefined ? { usage_nano_cores: u64(v.usageNanoCores) } : {}), ...psi(s.psi.cpu) },
    memory: {
      timestamp: ts,
      working_set_bytes: u64(s.memoryWorkingSetBytes),
      usage_bytes: u64(s.memoryUsageBytes),
      rss_bytes: u64(s.memoryRssBytes),
      ...(s.memoryAvailableBytes !== undefined ? { available_bytes: u64(s.memoryAvailableBytes) } : {}),
      ...faults(s),
      ...psi(s.psi.memory),
    },
    ...(s.psi.io ? { io: { timestamp: ts, ...psi(s.psi.io) } } : {}),
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
  const m = s.config.metadata;
  const attributes = { id: s.id, metadata: { name: m.name, namespace: m.namespace, uid: m.uid, attempt: m.attempt }, labels: s.config.labels, annotations: s.config.annotations };
  const containers = v.containers.map(containerStatsToCri);
  if (!g) return { attributes, linux: { containers } };
  const ts = nanos(g.timestampMs);
  return {
    attributes,
    linux: {
      cpu: { timestamp: ts, usage_core_nano_seconds: u64(g.cpuUsageNanos), ...(v.usageNanoCores !== undefined ? { usage_nano_cores: u64(v.usageNanoCores) } : {}), ...psi(g.psi.cpu) },
      memory: {
        timestamp: ts,
        working_set_bytes: u64(g.memoryWorkingSetBytes),
        usage_bytes: u64(g.memoryUsageBytes),
        rss_bytes: u64(g.memoryRssBytes),
        ...faults(g),
        ...psi(g.psi.memory),
      },
      ...(g.psi.io ? { io: { timestamp: ts, ...psi(g.psi.io) } } : {}),
      process: { timestamp: ts, process_count: u64(g.processCount) },
      containers,
    },
  };
}

// ---- metrics (cAdvisor-style series) ----

/**
 * ListMetricDescriptors / ListPodSandboxMetrics: the cAdvisor series kubelet
 * serves on /metrics/cadvisor when it takes them from the runtime, read from
 * the guest's cgroups (the pod's cgroup for the pod series, container="").
 * CRI metric values are unsigned integers, so the *_seconds_total counters are
 * whole seconds; ContainerStats carries the same counters in nanoseconds and
 * microseconds. The README lists these series.
 */
export const METRIC_LABELS = ['container', 'id', 'image', 'name', 'namespace', 'pod'];

type Kind = 'COUNTER' | 'GAUGE';
interface Series {
  name: string;
  help: string;
  kind: Kind;
  /** undefined: the guest has no such number for this cgroup, so no sample. */
  value: (s: GuestStats) => bigint | number | undefined;
}

const seconds = (ns: bigint) => ns / 1_000_000_000n;
const stallSeconds = (l: PressureLine | undefined) => (l ? Math.floor(l.totalUsec / 1e6) : undefined);

const SERIES: Series[] = [
  { name: 'container_cpu_usage_seconds_total', help: 'Cumulative cpu time consumed in seconds.', kind: 'COUNTER', value: (s) => seconds(s.cpuUsageNanos) },
  { name: 'container_cpu_user_seconds_total', help: 'Cumulative user cpu time consumed in seconds.', kind: 'COUNTER', value: (s) => seconds(s.detail.cpuUserNanos) },
  { name: 'container_cpu_system_seconds_total', help: 'Cumulative system cpu time consumed in seconds.', kind: 'COUNTER', value: (s) => seconds(s.detail.cpuSystemNanos) },
  { name: 'container_cpu_cfs_throttled_seconds_total', help: 'Total time duration the container has been throttled.', kind: 'COUNTER', value: (s) => seconds(s.detail.cpuThrottledNanos) },
  { name: 'container_memory_usage_bytes', help: 'Current memory usage in bytes, including all memory regardless of when it was accessed.', kind: 'GAUGE', value: (s) => s.memoryUsageBytes },
  { name: 'container_memory_working_set_bytes', help: 'Current working set in bytes.', kind: 'GAUGE', value: (s) => s.memoryWorkingSetBytes },
  { name: 'container_memory_rss', help: 'Size of RSS in bytes.', kind: 'GAUGE', value: (s) => s.memoryRssBytes },
  { name: 'container_memory_cache', help: 'Number of bytes of page cache memory.', kind: 'GAUGE', value: (s) => s.detail.memoryCacheBytes },
  { name: 'container_spec_memory_limit_bytes', help: 'Memory limit for the container.', kind: 'GAUGE', value: (s) => s.detail.memoryLimitBytes ?? 0 },
  { name: 'container_oom_events_total', help: 'Count of out of memory events observed for the container.', kind: 'COUNTER', value: (s) => s.detail.oomKills },
  { name: 'container_processes', help: 'Number of processes running inside the container.', kind: 'GAUGE', value: (s) => s.processCount },
  { name: 'container_fs_reads_bytes_total', help: 'Cumulative count of bytes read.', kind: 'COUNTER', value: (s) => s.detail.io.readBytes },
  { name: 'container_fs_writes_bytes_total', help: 'Cumulative count of bytes written.', kind: 'COUNTER', value: (s) => s.detail.io.writeBytes },
  { name: 'container_fs_reads_total', help: 'Cumulative count of reads completed.', kind: 'COUNTER', value: (s) => s.detail.io.readOps },
  { name: 'container_fs_writes_total', help: 'Cumulative count of writes completed.', kind: 'COUNTER', value: (s) => s.detail.io.writeOps },
  { name: 'container_memory_page_faults_total', help: 'Cumulative count of page faults (memory.stat pgfault).', kind: 'COUNTER', value: (s) => s.pageFaults },
  { name: 'container_memory_major_page_faults_total', help: 'Cumulative count of major page faults (memory.stat pgmajfault).', kind: 'COUNTER', value: (s) => s.majorPageFaults },
  { name: 'container_pressure_cpu_waiting_seconds_total', help: 'Total time duration tasks in the container have waited due to CPU congestion.', kind: 'COUNTER', value: (s) => stallSeconds(s.psi.cpu?.some) },
  { name: 'container_pressure_cpu_stalled_seconds_total', help: 'Total time duration no tasks in the container could make progress due to CPU congestion.', kind: 'COUNTER', value: (s) => stallSeconds(s.psi.cpu?.full) },
  { name: 'container_pressure_memory_waiting_seconds_total', help: 'Total time duration tasks in the container have waited due to memory congestion.', kind: 'COUNTER', value: (s) => stallSeconds(s.psi.memory?.some) },
  { name: 'container_pressure_memory_stalled_seconds_total', help: 'Total time duration no tasks in the container could make progress due to memory congestion.', kind: 'COUNTER', value: (s) => stallSeconds(s.psi.memory?.full) },
  { name: 'container_pressure_io_waiting_seconds_total', help: 'Total time duration tasks in the container have waited due to IO congestion.', kind: 'COUNTER', value: (s) => stallSeconds(s.psi.io?.some) },
  { name: 'container_pressure_io_stalled_seconds_total', help: 'Total time duration no tasks in the container could make progress due to IO congestion.', kind: 'COUNTER', value: (s) => stallSeconds(s.psi.io?.full) },
];

export function podMetricsToCri(v: SandboxStatsView): PodSandboxMetrics {
  const m = v.sandbox.config.metadata;
  const pod = { pod: m.name, namespace: m.namespace };
  return {
    pod_sandbox_id: v.sandbox.id,
    metrics: samples(v, v.guest, { ...pod, container: '', id: v.sandbox.id, image: '', name: v.sandbox.id }),
    container_metrics: v.containers.map((c: ContainerStatsView) => ({
      container_id: c.container.id,
      metrics: samples(c, c.stats, { ...pod, container: c.container.config.metadata.name, id: c.container.id, image: c.container.config.image, name: c.container.id }),
    })),
  };
}

function samples(view: { stale?: boolean }, stats: GuestStats | undefined, labels: Record<string, string>): Metric[] {
  if (!stats) return [];
  const labelValues = METRIC_LABELS.map((k) => labels[k] ?? '');
  // Gathered live: timestamp 0 (the CRI's rule for fresh samples). A guest past the list's
  // deadline is answered for with its last sample and the time it was taken (ns, as CRI's other stamps).
  const timestamp = view.stale ? nanos(stats.timestampMs) : '0';
  const out: Metric[] = [];
  for (const s of SERIES) {
    const v = s.value(stats);
    if (v === undefined) continue;
    out.push({ name: s.name, timestamp, metric_type: s.kind, label_values: labelValues, value: { value: String(v) } });
  }
  return out;
}
