import { invalidArgument } from '../errors.js';
import type { LinuxResources, NamespaceMode, NamespaceOptions, UserNamespaceMappings } from '../pod/records.js';
import type { Int64Value__Output } from './generated/runtime/v1/Int64Value.js';
import type { LinuxContainerResources, LinuxContainerResources__Output } from './generated/runtime/v1/LinuxContainerResources.js';
import type { IDMapping__Output } from './generated/runtime/v1/IDMapping.js';
import type { NamespaceOption__Output } from './generated/runtime/v1/NamespaceOption.js';
import type { UserNamespace__Output } from './generated/runtime/v1/UserNamespace.js';

/**
 * CRI field mappings that more than one resource module uses. The CRI objects
 * arrive with proto3 defaults filled in (CRI_LOADER_OPTIONS in proto.ts) and
 * 64-bit numbers as decimal strings.
 */

/** An id field the request must carry; an empty one is the caller's mistake, not NotFound. */
export function requireId(value: string, field: string): string {
  if (!value) throw invalidArgument(`${field} is empty`);
  return value;
}

/** An int64 that arrived as a decimal string, as a JS number (exact below 2^53, plenty for these fields). */
export function int(v: string | number | undefined | null, field: string): number {
  if (v === undefined || v === null || v === '') return 0;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw invalidArgument(`${field} ${JSON.stringify(v)} is not an integer podvisor can use`);
  return n;
}

const NAMESPACE_MODES: readonly NamespaceMode[] = ['POD', 'CONTAINER', 'NODE', 'TARGET'];

function namespaceMode(v: unknown): NamespaceMode {
  if (typeof v === 'number') return NAMESPACE_MODES[v] ?? 'POD';
  return NAMESPACE_MODES.includes(v as NamespaceMode) ? (v as NamespaceMode) : 'POD';
}

/** kubelet's defaults when a field is absent: pod-wide network and IPC, per-container PID. */
export function namespaceOptionsFromCri(ns: NamespaceOption__Output | null | undefined): NamespaceOptions {
  if (!ns) return { network: 'POD', pid: 'CONTAINER', ipc: 'POD', targetId: '' };
  const userns = usernsFromCri(ns.userns_options);
  return {
    network: namespaceMode(ns.network), pid: namespaceMode(ns.pid), ipc: namespaceMode(ns.ipc), targetId: ns.target_id ?? '',
    ...(userns ? { userns } : {}),
  };
}

/** UserNamespace: NODE (or absent) is no user namespace; POD carries the pod's mappings; nothing else is defined. */
function usernsFromCri(u: UserNamespace__Output | null | undefined): UserNamespaceMappings | undefined {
  if (!u) return undefined;
  const mode = namespaceMode(u.mode);
  if (mode === 'NODE') return undefined;
  if (mode !== 'POD') throw invalidArgument(`user namespace mode ${mode} is not defined by the CRI (NODE or POD)`);
  const ids = (list: IDMapping__Output[]) => list.map((m) => ({ hostId: m.host_id, containerId: m.container_id, length: m.length }));
  return { uids: ids(u.uids), gids: ids(u.gids) };
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
    memorySwapLimitInBytes: int(r.memory_swap_limit_in_bytes, 'memory_swap_limit_in_bytes'),
    hugepageLimits: (r.hugepage_limits ?? []).map((h) => ({ pageSize: h.page_size, limitBytes: int(h.limit, 'hugepage limit') })),
    unified: r.unified ?? {},
  };
}

/** The resources in force, in CRI terms (ContainerStatus.resources). */
export function resourcesToCri(r: LinuxResources): LinuxContainerResources {
  return {
    cpu_period: String(r.cpuPeriod),
    cpu_quota: String(r.cpuQuota),
    cpu_shares: String(r.cpuShares),
    memory_limit_in_bytes: String(r.memoryLimitInBytes),
    oom_score_adj: String(r.oomScoreAdj),
    cpuset_cpus: r.cpusetCpus,
    cpuset_mems: r.cpusetMems,
    hugepage_limits: (r.hugepageLimits ?? []).map((h) => ({ page_size: h.pageSize, limit: String(h.limitBytes) })),
    unified: r.unified ?? {},
    memory_swap_limit_in_bytes: String(r.memorySwapLimitInBytes ?? 0),
  };
}

/** The user and groups fields that sandbox and container security contexts share. */
interface CriIdentity {
  run_as_user?: Int64Value__Output | null;
  run_as_group?: Int64Value__Output | null;
  supplemental_groups?: (string | number)[];
}

/** run_as_user / run_as_group (set only when kubelet sends the wrapper) and supplemental_groups. */
export function identityFromCri(sec: CriIdentity | null | undefined): { runAsUser?: number; runAsGroup?: number; supplementalGroups: number[] } {
  return {
    ...(sec?.run_as_user ? { runAsUser: int(sec.run_as_user.value, 'run_as_user') } : {}),
    ...(sec?.run_as_group ? { runAsGroup: int(sec.run_as_group.value, 'run_as_group') } : {}),
    supplementalGroups: (sec?.supplemental_groups ?? []).map((g) => int(g, 'supplemental_groups')),
  };
}
