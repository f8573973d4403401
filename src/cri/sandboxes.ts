import { invalidArgument } from '../errors.js';
import { nowNanos } from '../pod/clock.js';
import type { SandboxFilter } from '../pod/filters.js';
import type { SandboxRuntime } from '../pod/pod-context.js';
import type { SandboxConfig, SandboxRecord, SandboxState } from '../pod/records.js';
import { containerStatusToCri } from './containers.js';
import { identityFromCri, namespaceOptionsFromCri, requireId, resourcesFromCri } from './fields.js';
import type { PodSandbox } from './generated/runtime/v1/PodSandbox.js';
import type { PodSandboxConfig__Output } from './generated/runtime/v1/PodSandboxConfig.js';
import type { PodSandboxFilter__Output } from './generated/runtime/v1/PodSandboxFilter.js';
import type { PodSandboxStatus } from './generated/runtime/v1/PodSandboxStatus.js';
import type { PodSandboxStatsFilter__Output } from './generated/runtime/v1/PodSandboxStatsFilter.js';
import { sendChunks } from './list-stream.js';
import type { RuntimeRpc } from './rpc.js';

/**
 * The pod sandbox RPCs of RuntimeService and their CRI <-> pod-domain
 * mapping. The logic is in src/pod/sandbox-service.ts (`svc.pods.sandboxes`).
 */

// ---- handlers ----

export const runPodSandbox: RuntimeRpc<'RunPodSandbox'> = async (svc, req, call) => ({
  pod_sandbox_id: await svc.pods.sandboxes.run(sandboxConfigFromCri(req.config), req.runtime_handler, { signal: call?.signal }),
});

export const stopPodSandbox: RuntimeRpc<'StopPodSandbox'> = async (svc, req) => {
  await svc.pods.sandboxes.stop(requireId(req.pod_sandbox_id, 'pod_sandbox_id'));
  return {};
};

export const removePodSandbox: RuntimeRpc<'RemovePodSandbox'> = async (svc, req) => {
  await svc.pods.sandboxes.remove(requireId(req.pod_sandbox_id, 'pod_sandbox_id'));
  return {};
};

export const podSandboxStatus: RuntimeRpc<'PodSandboxStatus'> = async (svc, req) => {
  const { record, runtime } = svc.pods.sandboxes.status(requireId(req.pod_sandbox_id, 'pod_sandbox_id'));
  return {
    status: sandboxStatusToCri(record),
    info: req.verbose ? sandboxVerboseInfo(record, runtime) : {},
    // Filled for kubelet's evented PLEG, which reads pod and container status in one call.
    containers_statuses: svc.pods.containers.list({ podSandboxId: record.id }).map(containerStatusToCri),
    timestamp: nowNanos(),
  };
};

export const listPodSandbox: RuntimeRpc<'ListPodSandbox'> = async (svc, req) => ({
  items: svc.pods.sandboxes.list(sandboxFilterFromCri(req.filter)).map(sandboxToCri),
});

/** The pod's new totals: accepted while they fit the VM's boot-time size, refused (FAILED_PRECONDITION) beyond it. */
export const updatePodSandboxResources: RuntimeRpc<'UpdatePodSandboxResources'> = async (svc, req) => {
  await svc.pods.resources.updateSandbox(requireId(req.pod_sandbox_id, 'pod_sandbox_id'), {
    resources: resourcesFromCri(req.resources),
    overhead: resourcesFromCri(req.overhead),
  });
  return {};
};

export const streamPodSandboxes: RuntimeRpc<'StreamPodSandboxes'> = async (svc, req, call) => {
  await sendChunks(svc.pods.sandboxes.list(sandboxFilterFromCri(req.filter)).map(sandboxToCri), call, (pod_sandboxes) => ({ pod_sandboxes }));
};

// ---- request mapping ----

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
    ...identityFromCri(sec),
  };
}

/** The CRI PodSandboxState enum names. */
const CRI_SANDBOX_STATE: Record<SandboxState, 'SANDBOX_READY' | 'SANDBOX_NOTREADY'> = {
  ready: 'SANDBOX_READY',
  notready: 'SANDBOX_NOTREADY',
};

function stateFromCri(v: { state: unknown } | null | undefined): SandboxState | undefined {
  if (!v) return undefined;
  return v.state === 'SANDBOX_READY' || v.state === 0 ? 'ready' : 'notready';
}

export function sandboxFilterFromCri(f: PodSandboxFilter__Output | PodSandboxStatsFilter__Output | null | undefined): SandboxFilter {
  if (!f) return {};
  return { id: f.id, state: 'state' in f ? stateFromCri(f.state) : undefined, labelSelector: f.label_selector };
}

// ---- response mapping ----

function metadataToCri(r: SandboxRecord) {
  const m = r.config.metadata;
  return { name: m.name, namespace: m.namespace, uid: m.uid, attempt: m.attempt };
}

export function sandboxToCri(r: SandboxRecord): PodSandbox {
  return {
    id: r.id,
    metadata: metadataToCri(r),
    state: CRI_SANDBOX_STATE[r.state],
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
    state: CRI_SANDBOX_STATE[r.state],
    created_at: r.createdAt,
    // The CNI result's addresses, IPv4 first (kubelet's pod IP); none for a loopback-only sandbox.
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
      // How it started: a cold boot, or a clone of this VM template (src/pod/vm-templates.ts).
      boot: r.vm.template ? 'template' : 'cold',
      ...(r.vm.template ? { template: r.vm.template } : {}),
    } : undefined,
    network: r.network.mode === 'cni'
      ? { mode: 'cni', network: r.network.networkName, netns: r.network.netns, ips: r.network.ips }
      : { mode: 'loopback', note: 'the node had no CNI network config when this pod started: loopback only' },
    imageDisks: r.images,
    notReadyReason: r.notReadyReason,
    config: r.config,
    // Copy mode: what the write-back refused of the guest's answers lately (README, Volumes).
    ...(rt?.share?.writeBackRefusals() ? { volumeWriteBackRefusals: rt.share.writeBackRefusals() } : {}),
  };
  return { info: JSON.stringify(info) };
}
