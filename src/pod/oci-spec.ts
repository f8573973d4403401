import { invalidArgument, unimplemented } from '../errors.js';
import { rejectAppArmorProfile } from './apparmor.js';
import { rejectHostNamespaces } from './host-namespaces.js';
import type { OciImageConfig } from './image-config.js';
import type { ContainerConfig, SandboxConfig, SandboxFiles } from './records.js';
import type { OciSeccomp } from './oci-seccomp.js';
import { ociSeccomp, type ContainerSeccomp } from './seccomp.js';
import { parseImageUser, type ResolvedUser, type UserRequest } from './user.js';
import { checkUserNamespace, ociIdMappings } from './user-namespace.js';
import { validateMounts, type OciMount } from './volume-mounts.js';

/** The slice of the OCI runtime spec podvisor fills in; the agent hands it to crun as config.json. */
export interface OciSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number; additionalGids: number[] };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: Record<'bounding' | 'effective' | 'permitted' | 'inheritable' | 'ambient', string[]>;
    rlimits: Array<{ type: string; hard: number; soft: number }>;
    noNewPrivileges: boolean;
    oomScoreAdj?: number;
  };
  root: { path: string; readonly: boolean };
  hostname?: string;
  mounts: Array<{ destination: string; type: string; source: string; options: string[] }>;
  annotations: Record<string, string>;
  linux: {
    namespaces: Array<{ type: string; path?: string }>;
    uidMappings?: Array<{ containerID: number; hostID: number; size: number }>;
    gidMappings?: Array<{ containerID: number; hostID: number; size: number }>;
    cgroupsPath: string;
    resources: {
      devices: Array<{ allow: boolean; access: string }>;
      memory?: { limit?: number; swap?: number };
      cpu?: { shares?: number; quota?: number; period?: number; cpus?: string; mems?: string };
      hugepageLimits?: Array<{ pageSize: string; limit: number }>;
      unified?: Record<string, string>;
    };
    sysctl: Record<string, string>;
    maskedPaths: string[];
    readonlyPaths: string[];
    seccomp?: OciSeccomp;
  };
}

/** The PATH an image without one gets (the OCI/containerd default). */
const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** containerd's (Docker's) default capability set for unprivileged containers. */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

/** Every capability a 6.x kernel knows, for privileged containers and "ALL". */
export const ALL_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN',
  'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ',
  'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];

/** containerd's defaults for paths a container must not read or write. */
export const DEFAULT_MASKED_PATHS = [
  '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap',
];
export const DEFAULT_READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/**
 * The guest kernel is the pod's own, so the open-files limit is not shared with
 * the host; this is the value container runtimes commonly configure for pods.
 */
const NOFILE_LIMIT = 1_048_576;

/**
 * kubelet's command rules (as containerd applies them): `command` replaces the
 * image Entrypoint and drops the image Cmd; `args` replace the image Cmd.
 */
export function containerArgs(config: Pick<ContainerConfig, 'command' | 'args'>, image: OciImageConfig): string[] {
  let entrypoint = image.Entrypoint ?? [];
  let args = image.Cmd ?? [];
  if (config.command.length > 0) {
    entrypoint = config.command;
    args = [];
  }
  if (config.args.length > 0) args = config.args;
  const all = [...entrypoint, ...args];
  if (all.length === 0) {
    throw invalidArgument('no command to run: the container config has no command or args and the image has no Entrypoint or Cmd');
  }
  return all;
}

/**
 * The environment: PATH default, HOSTNAME, then the image's Env, then the
 * config's envs; a later value for the same name replaces the earlier one in
 * place (containerd's order).
 */
export function containerEnv(config: Pick<ContainerConfig, 'envs'>, image: OciImageConfig, hostname: string, home?: string): string[] {
  const order: string[] = [];
  const values = new Map<string, string>();
  const set = (entry: string) => {
    const eq = entry.indexOf('=');
    const key = eq === -1 ? entry : entry.slice(0, eq);
    if (key === '') return;
    if (!values.has(key)) order.push(key);
    values.set(key, entry);
  };
  set(DEFAULT_PATH);
  set(`HOSTNAME=${hostname}`);
  for (const e of image.Env ?? []) set(e);
  for (const { key, value } of config.envs) {
    if (key === '') throw invalidArgument('an environment variable in the container config has an empty name');
    set(`${key}=${value}`);
  }
  if (home && !values.has('HOME')) set(`HOME=${home}`);
  return order.map((k) => values.get(k)!);
}

/** Who to run as, before name resolution: the config's security context wins over the image USER. */
export function containerUserRequest(config: ContainerConfig, image: OciImageConfig): UserRequest {
  const sec = config.security;
  if (sec.runAsGroup !== undefined && sec.runAsUser === undefined && sec.runAsUsername === '') {
    // The group of an unnamed user is ambiguous (the image's user may change); kubelet's API rejects it too.
    throw invalidArgument('run_as_group is set without run_as_user or run_as_username; set the user as well');
  }
  const fromImage = parseImageUser(image.User);
  const req: UserRequest = { supplementalGroups: sec.supplementalGroups, ...(sec.supplementalGroupsPolicy === 'Strict' ? { strictGroups: true } : {}) };
  if (sec.runAsUser !== undefined) req.uid = sec.runAsUser;
  else if (sec.runAsUsername !== '') req.username = sec.runAsUsername;
  else {
    req.uid = fromImage.uid;
    req.username = fromImage.username;
  }
  if (sec.runAsGroup !== undefined) req.gid = sec.runAsGroup;
  else if (sec.runAsUser === undefined && sec.runAsUsername === '') {
    // The image's group applies only with the image's user.
    req.gid = fromImage.gid;
    req.groupname = fromImage.groupname;
  }
  return req;
}

function normalizeCap(c: string): string {
  const up = c.toUpperCase();
  return up === 'ALL' || up.startsWith('CAP_') ? up : `CAP_${up}`;
}

/**
 * containerd's order: "ALL" in add gives every capability and "ALL" in drop
 * removes them all; then the named adds, then the named drops, so
 * add ALL + drop CHOWN means everything but CAP_CHOWN.
 */
export function containerCapabilities(add: string[], drop: string[], privileged: boolean): string[] {
  if (privileged) return [...ALL_CAPABILITIES];
  const adds = add.map(normalizeCap);
  const drops = drop.map(normalizeCap);
  for (const c of [...adds, ...drops]) {
    if (c !== 'ALL' && !ALL_CAPABILITIES.includes(c)) throw invalidArgument(`unknown capability "${c}"`);
  }
  let caps = [...DEFAULT_CAPABILITIES];
  if (adds.includes('ALL')) caps = [...ALL_CAPABILITIES];
  if (drops.includes('ALL')) caps = [];
  for (const c of adds) if (c !== 'ALL' && !caps.includes(c)) caps.push(c);
  return caps.filter((c) => !drops.includes(c));
}

export interface OciSpecInput {
  containerId: string;
  config: ContainerConfig;
  sandbox: SandboxConfig;
  image: OciImageConfig;
  user: ResolvedUser;
  /** The container's root filesystem in the guest (the overlay the agent mounted). */
  rootfsPath: string;
  sandboxFiles: SandboxFiles;
  cgroupsPath: string;
  /** The guest PID namespace to join, for PID mode TARGET (another container's) or POD. */
  pidNamespacePath?: string;
  /** From loadContainerSeccomp (which reads Localhost profile files); absent means no filter. */
  seccomp?: ContainerSeccomp;
  /** The container's CRI mounts as guest bind mounts (volume-mounts.ts); they win over the sandbox's own files. */
  volumes?: OciMount[];
}

/** Rejects what cannot work in a VM before anything is made (mounts and devices: volume-mounts.ts). */
export function validateContainerConfig(config: ContainerConfig): void {
  if (config.metadata.name === '') throw invalidArgument('container metadata.name is empty');
  if (config.image === '') throw invalidArgument('container image is empty');
  rejectHostNamespaces(config.security.namespaceOptions, `container "${config.metadata.name}"`);
  const userns = config.security.namespaceOptions.userns;
  if (userns) checkUserNamespace(userns, `container "${config.metadata.name}"`);
  rejectAppArmorProfile(config);
  validateMounts(config);
  if (config.stdinOnce && !config.stdin) throw invalidArgument('stdin_once is set but stdin is not');
  if (config.workingDir !== '' && !config.workingDir.startsWith('/')) {
    throw invalidArgument(`working_dir "${config.workingDir}" must be an absolute path`);
  }
}

/**
 * In a user namespace the container cannot mount sysfs for the guest's network
 * namespace or mqueue for the guest's IPC namespace (both belong to the guest's
 * own user namespace): it gets the guest's /sys bound read-only, and no mqueue
 * view (mq_open works without it) unless it has an IPC namespace of its own.
 */
function standardMounts(readonlySys: boolean, userns = false, ownIpc = false): OciSpec['mounts'] {
  const mounts = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', readonlySys ? 'ro' : 'rw'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', readonlySys ? 'ro' : 'rw'] },
  ];
  if (!userns) return mounts;
  return mounts
    .filter((m) => m.type !== 'mqueue' || ownIpc)
    .map((m) => (m.type === 'sysfs' ? { destination: '/sys', type: 'bind', source: '/sys', options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'] } : m));
}

/**
 * The OCI runtime spec for a container in the pod VM. Namespaces: the VM is the
 * pod, so containers share the guest's network and UTS namespaces (the pod's
 * network and hostname), get their own mount and cgroup namespaces, an IPC
 * namespace of their own only in CONTAINER mode, and a PID namespace of their
 * own unless told to join one.
 */
export function buildOciSpec(input: OciSpecInput): OciSpec {
  const { config, sandbox, image, user } = input;
  validateContainerConfig(config);
  const sec = config.security;
  const hostname = sandbox.hostname;

  const namespaces: OciSpec['linux']['namespaces'] = [{ type: 'mount' }, { type: 'cgroup' }];
  if (sec.namespaceOptions.ipc === 'CONTAINER') namespaces.push({ type: 'ipc' });
  if (sec.namespaceOptions.pid === 'CONTAINER') namespaces.push({ type: 'pid' });
  else if (input.pidNamespacePath) namespaces.push({ type: 'pid', path: input.pidNamespacePath });
  else {
    throw unimplemented(`container "${config.metadata.name}": PID namespace mode ${sec.namespaceOptions.pid} needs a ` +
      'namespace to join that this sandbox does not have');
  }

  const userns = sec.namespaceOptions.userns;
  if (userns) namespaces.push({ type: 'user' });

  const mounts = standardMounts(!sec.privileged, !!userns, sec.namespaceOptions.ipc === 'CONTAINER');
  const files: Array<[string | undefined, string]> = [
    [input.sandboxFiles.hostname, '/etc/hostname'],
    [input.sandboxFiles.resolvConf, '/etc/resolv.conf'],
    [input.sandboxFiles.hosts, '/etc/hosts'],
  ];
  const volumes = input.volumes ?? [];
  for (const [source, destination] of files) {
    if (source && !volumes.some((v) => v.destination === destination)) mounts.push({ destination, type: 'bind', source, options: ['rbind', 'rprivate', sec.readonlyRootfs ? 'ro' : 'rw'] });
  }

  mounts.push(...volumes);

  const caps = containerCapabilities(sec.addCapabilities, sec.dropCapabilities, sec.privileged);
  const seccomp = ociSeccomp(input.seccomp, caps);
  const resources: OciSpec['linux']['resources'] = { devices: [{ allow: false, access: 'rwm' }] };
  const r = config.resources;
  if (r) {
    if (r.memoryLimitInBytes > 0) resources.memory = { limit: r.memoryLimitInBytes };
    if (r.memorySwapLimitInBytes) resources.memory = { ...resources.memory, swap: r.memorySwapLimitInBytes };
    if (r.hugepageLimits?.length) resources.hugepageLimits = r.hugepageLimits.map((h) => ({ pageSize: h.pageSize, limit: h.limitBytes }));
    if (r.unified && Object.keys(r.unified).length > 0) resources.unified = r.unified;
    const cpu: NonNullable<OciSpec['linux']['resources']['cpu']> = {};
    if (r.cpuShares > 0) cpu.shares = r.cpuShares;
    if (r.cpuQuota > 0) cpu.quota = r.cpuQuota;
    if (r.cpuPeriod > 0) cpu.period = r.cpuPeriod;
    if (r.cpusetCpus) cpu.cpus = r.cpusetCpus;
    if (r.cpusetMems) cpu.mems = r.cpusetMems;
    if (Object.keys(cpu).length > 0) resources.cpu = cpu;
  }

  return {
    ociVersion: '1.1.0',
    process: {
      terminal: config.tty,
      user: { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids },
      args: containerArgs(config, image),
      env: containerEnv(config, image, hostname, user.home),
      cwd: config.workingDir || image.WorkingDir || '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps, inheritable: [], ambient: [] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: NOFILE_LIMIT, soft: NOFILE_LIMIT }],
      noNewPrivileges: sec.noNewPrivs,
      ...(r && r.oomScoreAdj !== 0 ? { oomScoreAdj: r.oomScoreAdj } : {}),
    },
    root: { path: input.rootfsPath, readonly: sec.readonlyRootfs },
    mounts,
    annotations: {
      'io.kubernetes.cri.container-type': 'container',
      'io.kubernetes.cri.container-name': config.metadata.name,
      'io.kubernetes.cri.sandbox-name': sandbox.metadata.name,
      'io.kubernetes.cri.sandbox-namespace': sandbox.metadata.namespace,
      'io.kubernetes.cri.sandbox-uid': sandbox.metadata.uid,
    },
    linux: {
      namespaces,
      ...(userns ? { uidMappings: ociIdMappings(userns.uids), gidMappings: ociIdMappings(userns.gids) } : {}),
      cgroupsPath: input.cgroupsPath,
      resources,
      // Sandbox sysctls are set once for the whole VM by the sandbox setup.
      sysctl: {},
      maskedPaths: sec.privileged ? [] : (sec.maskedPaths ?? DEFAULT_MASKED_PATHS),
      readonlyPaths: sec.privileged ? [] : (sec.readonlyPaths ?? DEFAULT_READONLY_PATHS),
      ...(seccomp ? { seccomp } : {}),
    },
  };
}
