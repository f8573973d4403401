import { invalidArgument } from '../errors.js';
import type { SandboxFilter } from '../pod/filters.js';
import type { SandboxRuntime } from '../pod/pod-context.js';
import type { LinuxResources, NamespaceMode, NamespaceOptions, SandboxConfig, SandboxRecord } from '../pod/records.js';
import { CRI_SANDBOX_STATE } from '../pod/state-machine.js';
import type { LinuxContainerResources__Output } from './generated/runtime/v1/LinuxContainerResources.js';
import type { NamespaceOption__Output } from './generated/runtime/v1/NamespaceOption.js';
import type { PodSandbox } from './generated/runtime/v1/PodSandbox.js';
import type { PodSandboxConfig__Output } from './generated/runtime/v1/PodSandboxConfig.js';
import type { PodSandboxFilter__Output } from './generated/runtime/v1/PodSandboxFilter.js';
import type { PodSandboxStatus } from './generated/runtime/v1/PodSandboxStatus.js';
import type { PodSandboxStatsFilter__Output } from './generated/runtime/v1/PodSandboxStatsFilter.js';

/**
 * CRI <-> pod-domain translation for sandboxes. The CRI objects arrive with
 * proto3 defaults filled in (CRI_LOADER_OPTIONS), 64-bit numbers as strings.
 */

const NAMESPACE_MODES: readonly NamespaceMode[] = ['POD', 'CONTAINER', 'NODE', 'TARGET'];

function mode(v: unknown): NamespaceMode {
  if (typeof v === 'number') return NAMESPACE_MODES[v] ?? 'POD';
  return NAMESPACE_MODES.includes(v as NamespaceMode) ? (v as NamespaceMode) : 'POD';
}

/** kubelet's defaults when a field is absent: pod-wide network and IPC, per-container PID. */
export function namespaceOptionsFromCri(ns: NamespaceOption__Output | null | undefined): NamespaceOptions {
  if (!ns) return { network: 'POD', pid: 'CONTAINER', ipc: 'POD', targetId: '' };
  return { network: mode(ns.network), pid: mode(ns.pid), ipc: mode(ns.ipc), targetId: ns.target_id ?? '' };
}

/** An int64 that arrived as a decimal string, as a JS number (exact below 2^53, plenty for these fields). */
export function int(v: string | number | undefined | null, field: string): number {
  if (v === undefined || v === null || v === '') return 0;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw invalidArgument(`${field} ${JSON.stringify(v)} is not an integer podvisor can use`);
  return n;
}

export function resourcesFromCri(r: LinuxContainerResources__Output | null | undefined): LinuxResources | undefined {
  if (!r) return undefined;
  return {
    cpuPeriod: int(r.cpu_period, 'cpu_period'),
    cpuQuota: int(r.cpu_quota, 'cpu_quota'),
    cpuShares: int(r.cpu_shares, 'cpu_shares'),
    memoryLimitInBytes: int(r.memory_limit_in_bytes, 'memory_limit_in_bytes'),
    oomScoreAdj: int(r.oom_score_adj, 'oom_score_adj'),
    cpusetCpus: r.cpuset_cpus ?? '',
    cpusetMems: r.cpuset_mems ?? '',
  };
}

export function sandboxConfigFromCri(c: PodSandboxConfig__Output | null | undefined): SandboxConfig {
  if (!c) throw invalidArgument('the request has no sandbox config');
  if (!c.metadata) throw invalidArgument('the sandbox config has no metadata');
  const linux = c.linux;
  const sec = linux?.security_context;
  const dns = c.dns_config;
  return {
    metadata: { name: c.metadata.name, namespace: c.metadata.namespace, uid: c.metadata.uid, attempt: c.metadata.attempt },
    hostname: c.hostname,
    logDirectory: c.log_directory,
    ...(dns ? { dnsConfig: { servers: dns.servers, searches: dns.searches, options: dns.options } } : {}),
    portMappings: c.port_mappings.map((p) => ({
      protocol: (typeof p.protocol === 'string' ? p.protocol : (['TCP', 'UDP', 'SCTP'] as const)[p.protocol] ?? 'TCP') as 'TCP' | 'UDP' | 'SCTP',
      containerPort: p.container_port,
      hostPort: p.host_port,
      hostIp: p.host_ip,
    })),
    labels: c.labels,
    annotations: c.annotations,
    cgroupParent: linux?.cgroup_parent ?? '',
    sysctls: linux?.sysctls ?? {},
    namespaceOptions: namespaceOptionsFromCri(sec?.namespace_options),
    ...(linux?.resources ? { resources: resourcesFromCri(linux.resources) } : {}),
    ...(linux?.overhead ? { overhead: resourcesFromCri(linux.overhead) } : {}),
    privileged: sec?.privileged ?? false,
    readonlyRootfs: sec?.readonly_rootfs ?? false,
    ...(sec?.run_as_user ? { runAsUser: int(sec.run_as_user.value, 'run_as_user') } : {}),
    ...(sec?.run_as_group ? { runAsGroup: int(sec.run_as_group.value, 'run_as_group') } : {}),
    supplementalGroups: (sec?.supplemental_groups ?? []).map((g) => int(g, 'supplemental_groups')),
  };
}

function stateFromCri(v: { state: unknown } | null | undefined): 'ready' | 'notready' | undefined {
  if (!v) return undefined;
  return v.state === 'SANDBOX_READY' || v.state === 0 ? 'ready' : 'notready';
}

export function sandboxFilterFromCri(f: PodSandboxFilter__Output | PodSandboxStatsFilter__Output | null | undefined): SandboxFilter {
  if (!f) return {};
  return { id: f.id, state: 'state' in f ? stateFromCri(f.state) : undefined, labelSelector: f.label_selector };
}

function metadataToCri(r: SandboxRecord) {
  const m = r.config.metadata;
  return { name: m.name, namespace: m.namespace, uid: m.uid, attempt: m.attempt };
}

export function sandboxToCri(r: SandboxRecord): PodSandbox {
  return {
    id: r.id,
    metadata: metadataToCri(r),
    state: CRI_SANDBOX_STATE[r.state] as PodSandbox['state'],
    created_at: r.createdAt,
    labels: r.config.labels,
    annotations: r.config.annotations,
    runtime_handler: r.runtimeHandler,
  };
}

export function sandboxStatusToCri(r: SandboxRecord): PodSandboxStatus {
  const ns = r.config.namespaceOptions;
  return {
    id: r.id,
    metadata: metadataToCri(r),
    state: CRI_SANDBOX_STATE[r.state] as PodSandboxStatus['state'],
    created_at: r.createdAt,
    // Loopback only until pod networking exists: no pod IP to report.
    network: { ip: r.network.ips[0] ?? '', additional_ips: r.network.ips.slice(1).map((ip) => ({ ip })) },
    linux: { namespaces: { options: { network: ns.network, pid: ns.pid, ipc: ns.ipc, target_id: ns.targetId } } },
    labels: r.config.labels,
    annotations: r.config.annotations,
    runtime_handler: r.runtimeHandler,
  };
}

/** PodSandboxStatus verbose info: what an operator needs to find the VM. */
export function sandboxVerboseInfo(r: SandboxRecord, rt: SandboxRuntime | undefined): Record<string, string> {
  const info = {
    vm: r.vm ? {
      pid: rt?.vm.pid ?? r.vm.pid,
      running: rt !== undefined && rt.vm.state === 'running',
      accelerator: r.vm.accelerator,
      vcpus: r.vm.vcpus,
      memoryMiB: r.vm.memoryMiB,
      runDir: r.vm.runDir,
      consoleLog: rt?.vm.paths.consoleLog,
    } : undefined,
    network: {
      mode: r.network.mode,
      note: 'the pod VM has a loopback interface only: pod networking is not implemented yet',
    },
    imageDisks: r.images,
    notReadyReason: r.notReadyReason,
    config: r.config,
  };
  return { info: JSON.stringify(info) };
}
