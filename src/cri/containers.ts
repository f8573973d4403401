import { invalidArgument } from '../errors.js';
import type { ContainerFilter } from '../pod/filters.js';
import type { ContainerConfig, ContainerRecord, ContainerState, Mount, SecurityProfile } from '../pod/records.js';
import { identityFromCri, int, namespaceOptionsFromCri, requireId, resourcesFromCri, resourcesToCri } from './fields.js';
import { sendChunks } from './list-stream.js';
import { criSignalName, criSignalNumber } from './signal-names.js';
import type { Container } from './generated/runtime/v1/Container.js';
import type { ContainerConfig__Output } from './generated/runtime/v1/ContainerConfig.js';
import type { ContainerFilter__Output } from './generated/runtime/v1/ContainerFilter.js';
import type { ContainerStatsFilter__Output } from './generated/runtime/v1/ContainerStatsFilter.js';
import type { ContainerStatus } from './generated/runtime/v1/ContainerStatus.js';
import type { SecurityProfile__Output } from './generated/runtime/v1/SecurityProfile.js';
import type { RuntimeRpc } from './rpc.js';

/**
 * The container RPCs of RuntimeService (lifecycle, status, list, ExecSync,
 * ReopenContainerLog) and their CRI <-> pod-domain mapping. The logic is in
 * src/pod/container-service.ts (`svc.pods.containers`).
 */

// ---- handlers ----

export const createContainer: RuntimeRpc<'CreateContainer'> = async (svc, req) => ({
  container_id: await svc.pods.containers.create(requireId(req.pod_sandbox_id, 'pod_sandbox_id'), containerConfigFromCri(req.config)),
});

export const startContainer: RuntimeRpc<'StartContainer'> = async (svc, req) => {
  await svc.pods.containers.start(requireId(req.container_id, 'container_id'));
  return {};
};

export const stopContainer: RuntimeRpc<'StopContainer'> = async (svc, req) => {
  await svc.pods.containers.stop(requireId(req.container_id, 'container_id'), Math.max(0, int(req.timeout, 'timeout')));
  return {};
};

export const removeContainer: RuntimeRpc<'RemoveContainer'> = async (svc, req) => {
  await svc.pods.containers.remove(requireId(req.container_id, 'container_id'));
  return {};
};

export const containerStatus: RuntimeRpc<'ContainerStatus'> = async (svc, req) => {
  const record = svc.pods.containers.status(requireId(req.container_id, 'container_id'));
  // Copy mode: what the write-back refused of this container's volumes lately (README, Volumes).
  const refusals = req.verbose ? svc.pods.sandboxes.status(record.sandboxId).runtime?.share?.writeBackRefusals(record.id) : undefined;
  return {
    status: containerStatusToCri(record),
    info: (req.verbose ? { info: JSON.stringify({ sandboxId: record.sandboxId, guestPid: record.guestPid, config: record.config, ...(refusals ? { volumeWriteBackRefusals: refusals } : {}) }) } : {}) as Record<string, string>,
  };
};

export const listContainers: RuntimeRpc<'ListContainers'> = async (svc, req) => ({
  containers: svc.pods.containers.list(containerFilterFromCri(req.filter)).map(containerToCri),
});

export const execSync: RuntimeRpc<'ExecSync'> = async (svc, req) => {
  const res = await svc.pods.containers.execSync(requireId(req.container_id, 'container_id'), req.cmd, Math.max(0, int(req.timeout, 'timeout')));
  return { stdout: res.stdout, stderr: res.stderr, exit_code: res.exitCode };
};

export const reopenContainerLog: RuntimeRpc<'ReopenContainerLog'> = async (svc, req) => {
  await svc.pods.containers.reopenLog(requireId(req.container_id, 'container_id'));
  return {};
};

/** In-place resize: the new limits go to the running container's guest cgroup; it is never restarted. */
export const updateContainerResources: RuntimeRpc<'UpdateContainerResources'> = async (svc, req) => {
  const id = requireId(req.container_id, 'container_id');
  if (req.windows) throw invalidArgument('windows resources do not apply to a Linux pod VM');
  const linux = resourcesFromCri(req.linux);
  if (!linux) throw invalidArgument('UpdateContainerResources needs linux resources');
  await svc.pods.resources.updateContainer(id, linux);
  return {};
};

export const streamContainers: RuntimeRpc<'StreamContainers'> = async (svc, req, call) => {
  await sendChunks(svc.pods.containers.list(containerFilterFromCri(req.filter)).map(containerToCri), call, (containers) => ({ containers }));
};

// ---- request mapping ----

const PROPAGATIONS = ['PRIVATE', 'HOST_TO_CONTAINER', 'BIDIRECTIONAL'] as const;
const PROPAGATION_NAMES: Record<string, Mount['propagation']> = {
  PROPAGATION_PRIVATE: 'PRIVATE', PROPAGATION_HOST_TO_CONTAINER: 'HOST_TO_CONTAINER', PROPAGATION_BIDIRECTIONAL: 'BIDIRECTIONAL',
};

export function containerConfigFromCri(c: ContainerConfig__Output | null | undefined): ContainerConfig {
  if (!c) throw invalidArgument('the request has no container config');
  if (!c.metadata) throw invalidArgument('the container config has no metadata');
  if (!c.image?.image) throw invalidArgument('the container config names no image');
  const sec = c.linux?.security_context;
  const seccomp = profileFromCri(sec?.seccomp) ?? seccompProfileFromPath(sec?.seccomp_profile_path ?? '');
  const apparmor = profileFromCri(sec?.apparmor) ?? appArmorProfileFromName(sec?.apparmor_profile ?? '');
  return {
    metadata: { name: c.metadata.name, attempt: c.metadata.attempt },
    image: c.image.image,
    command: c.command,
    args: c.args,
    workingDir: c.working_dir,
    envs: c.envs.map((e) => ({ key: e.key, value: e.value })),
    mounts: c.mounts.map((m) => ({
      containerPath: m.container_path,
      hostPath: m.host_path,
      readonly: m.readonly,
      selinuxRelabel: m.selinux_relabel,
      propagation: typeof m.propagation === 'number' ? PROPAGATIONS[m.propagation] ?? 'PRIVATE' : PROPAGATION_NAMES[m.propagation] ?? 'PRIVATE',
      ...(m.recursive_read_only ? { recursiveReadOnly: true } : {}),
      ...(m.image?.image ? { image: m.image.image, imageSubPath: m.image_sub_path } : {}),
      ...(m.uidMappings.length > 0 || m.gidMappings.length > 0 ? { idMapped: true } : {}),
    })),
    devices: [...c.devices, ...c.CDI_devices.map((d) => ({ container_path: d.name, host_path: d.name, permissions: '' }))].map((d) => ({
      containerPath: d.container_path, hostPath: d.host_path, permissions: d.permissions,
    })),
    labels: c.labels,
    annotations: c.annotations,
    logPath: c.log_path,
    stdin: c.stdin,
    stdinOnce: c.stdin_once,
    tty: c.tty,
    ...(c.linux?.resources ? { resources: resourcesFromCri(c.linux.resources) } : {}),
    ...stopSignalFromCri(c.stop_signal),
    security: {
      privileged: sec?.privileged ?? false,
      readonlyRootfs: sec?.readonly_rootfs ?? false,
      ...identityFromCri(sec),
      runAsUsername: sec?.run_as_username ?? '',
      addCapabilities: sec?.capabilities?.add_capabilities ?? [],
      dropCapabilities: sec?.capabilities?.drop_capabilities ?? [],
      noNewPrivs: sec?.no_new_privs ?? false,
      supplementalGroupsPolicy: sec?.supplemental_groups_policy === 'Strict' ? 'Strict' : 'Merge',
      // kubelet sends the lists only when it means them (it also sends empty lists for "unmasked" /proc).
      ...(sec && (sec.masked_paths.length > 0 || sec.readonly_paths.length > 0)
        ? { maskedPaths: sec.masked_paths, readonlyPaths: sec.readonly_paths } : {}),
      namespaceOptions: namespaceOptionsFromCri(sec?.namespace_options),
      ...(seccomp ? { seccomp } : {}),
      ...(apparmor ? { apparmor } : {}),
    },
  };
}

/** ContainerConfig.stop_signal as a signal number (the pod module's terms); nothing for RUNTIME_DEFAULT. */
function stopSignalFromCri(s: string | number | undefined): { stopSignal?: string } {
  if (!s || s === 'RUNTIME_DEFAULT') return {};
  const n = typeof s === 'string' ? criSignalNumber(s) : undefined;
  if (n === undefined) throw invalidArgument(`stop_signal ${JSON.stringify(s)} is not a signal podvisor knows`);
  return { stopSignal: String(n) };
}

const PROFILE_TYPES: SecurityProfile['type'][] = ['RuntimeDefault', 'Unconfined', 'Localhost'];

/** A set SecurityProfile message (even an empty one, which is RuntimeDefault); null when kubelet left it out. */
function profileFromCri(p: SecurityProfile__Output | null | undefined): SecurityProfile | undefined {
  if (!p) return undefined;
  const type = typeof p.profile_type === 'number' ? PROFILE_TYPES[p.profile_type] : p.profile_type;
  if (!type || !PROFILE_TYPES.includes(type)) throw invalidArgument(`unknown security profile type ${JSON.stringify(p.profile_type)}`);
  return { type, localhostRef: p.localhost_ref };
}

/**
 * The deprecated `seccomp_profile_path` strings, as kubelet sent them before
 * the SecurityProfile field (`runtime/default`, `docker/default`,
 * `unconfined`, `localhost/<absolute path>`).
 */
export function seccompProfileFromPath(path: string): SecurityProfile | undefined {
  if (path === '') return undefined;
  if (path === 'runtime/default' || path === 'docker/default') return { type: 'RuntimeDefault', localhostRef: '' };
  if (path === 'unconfined') return { type: 'Unconfined', localhostRef: '' };
  if (path.startsWith('localhost/')) return { type: 'Localhost', localhostRef: path.slice('localhost/'.length) };
  throw invalidArgument(`seccomp_profile_path "${path}" is not one of runtime/default, docker/default, unconfined or localhost/<path>`);
}

/** The deprecated `apparmor_profile` strings, as kubelet used to send them. */
export function appArmorProfileFromName(name: string): SecurityProfile | undefined {
  if (name === '') return undefined;
  if (name === 'runtime/default') return { type: 'RuntimeDefault', localhostRef: '' };
  if (name === 'unconfined') return { type: 'Unconfined', localhostRef: '' };
  if (name.startsWith('localhost/')) return { type: 'Localhost', localhostRef: name.slice('localhost/'.length) };
  throw invalidArgument(`apparmor_profile "${name}" is not one of runtime/default, unconfined or localhost/<profile>`);
}

/** The CRI ContainerState enum, by name and by number (proto order). */
const CRI_CONTAINER_STATE: Record<ContainerState, 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN'> = {
  created: 'CONTAINER_CREATED',
  running: 'CONTAINER_RUNNING',
  exited: 'CONTAINER_EXITED',
  unknown: 'CONTAINER_UNKNOWN',
};
const STATE_BY_NUMBER: ContainerState[] = ['created', 'running', 'exited', 'unknown'];

function stateFromCri(v: string | number): ContainerState | undefined {
  if (typeof v === 'number') return STATE_BY_NUMBER[v];
  return (Object.keys(CRI_CONTAINER_STATE) as ContainerState[]).find((s) => CRI_CONTAINER_STATE[s] === v);
}

export function containerFilterFromCri(f: ContainerFilter__Output | ContainerStatsFilter__Output | null | undefined): ContainerFilter {
  if (!f) return {};
  const state = 'state' in f && f.state ? stateFromCri(f.state.state) : undefined;
  return { id: f.id, podSandboxId: f.pod_sandbox_id, state, labelSelector: f.label_selector };
}

// ---- response mapping ----

export function containerToCri(r: ContainerRecord): Container {
  return {
    id: r.id,
    pod_sandbox_id: r.sandboxId,
    metadata: { name: r.config.metadata.name, attempt: r.config.metadata.attempt },
    // As containerd: the image as asked for, and the image id as image_ref.
    image: { image: r.config.image, user_specified_image: r.config.image },
    image_ref: r.imageId,
    image_id: r.imageId,
    state: CRI_CONTAINER_STATE[r.state],
    created_at: r.createdAt,
    labels: r.config.labels,
    annotations: r.config.annotations,
  };
}

export function containerStatusToCri(r: ContainerRecord): ContainerStatus {
  return {
    id: r.id,
    metadata: { name: r.config.metadata.name, attempt: r.config.metadata.attempt },
    state: CRI_CONTAINER_STATE[r.state],
    created_at: r.createdAt,
    started_at: r.startedAt ?? '0',
    finished_at: r.finishedAt ?? '0',
    exit_code: r.exitCode ?? 0,
    image: { image: r.config.image, user_specified_image: r.config.image },
    image_ref: r.imageRef,
    image_id: r.imageId,
    reason: r.reason ?? '',
    message: r.message ?? '',
    labels: r.config.labels,
    annotations: r.config.annotations,
    mounts: r.config.mounts.map((m) => ({
      container_path: m.containerPath,
      host_path: m.hostPath,
      readonly: m.readonly,
      selinux_relabel: m.selinuxRelabel,
      propagation: `PROPAGATION_${m.propagation}` as const,
      recursive_read_only: !!m.recursiveReadOnly,
      ...(m.image ? { image: { image: m.image }, image_sub_path: m.imageSubPath ?? '' } : {}),
    })),
    log_path: r.logFile,
    ...(r.config.resources ? { resources: { linux: resourcesToCri(r.config.resources) } } : {}),
    ...(r.user ? { user: { linux: { uid: r.user.uid, gid: r.user.gid, supplemental_groups: [r.user.gid, ...r.user.additionalGids] } } } : {}),
    stop_signal: criSignalName(r.stopSignal),
  };
}
