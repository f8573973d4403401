import type { VmBackendName } from '../vm/pod-vm.js';
import type { SandboxShareState } from '../volume/sandbox-share.js';
import type { Nanos } from './clock.js';

/**
 * The persisted shape of sandboxes and containers. These records are podvisor's
 * own (camelCase, plain JSON), independent of the CRI's generated types: the CRI
 * handlers translate at the edge, so the on-disk format does not move when the
 * proto bindings do.
 */

export interface PodMetadata {
  name: string;
  namespace: string;
  uid: string;
  attempt: number;
}

export interface ContainerMetadata {
  name: string;
  attempt: number;
}

export interface DnsConfig {
  servers: string[];
  searches: string[];
  options: string[];
}

export interface PortMapping {
  protocol: 'TCP' | 'UDP' | 'SCTP';
  containerPort: number;
  hostPort: number;
  hostIp: string;
}

/** Linux namespace modes, CRI NamespaceMode: POD=0, CONTAINER=1, NODE=2, TARGET=3. */
export type NamespaceMode = 'POD' | 'CONTAINER' | 'NODE' | 'TARGET';

export interface NamespaceOptions {
  network: NamespaceMode;
  pid: NamespaceMode;
  ipc: NamespaceMode;
  targetId: string;
  /** hostUsers: false (CRI UserNamespace mode POD): the pod's id mappings; absent: no user namespace. */
  userns?: UserNamespaceMappings;
}

export interface IdMapping {
  hostId: number;
  containerId: number;
  length: number;
}

export interface UserNamespaceMappings {
  uids: IdMapping[];
  gids: IdMapping[];
}

export interface LinuxResources {
  cpuPeriod: number;
  cpuQuota: number;
  cpuShares: number;
  memoryLimitInBytes: number;
  oomScoreAdj: number;
  cpusetCpus: string;
  cpusetMems: string;
  /** 0 or absent: not set; -1: unlimited swap. */
  memorySwapLimitInBytes?: number;
  hugepageLimits?: Array<{ pageSize: string; limitBytes: number }>;
  /** cgroup v2 files and values (e.g. memory.high). */
  unified?: Record<string, string>;
}

export interface SandboxConfig {
  metadata: PodMetadata;
  hostname: string;
  logDirectory: string;
  dnsConfig?: DnsConfig;
  portMappings: PortMapping[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
  cgroupParent: string;
  sysctls: Record<string, string>;
  namespaceOptions: NamespaceOptions;
  /** Pod-level overhead + container limits as kubelet sends them (LinuxPodSandboxConfig.resources). */
  resources?: LinuxResources;
  overhead?: LinuxResources;
  privileged: boolean;
  readonlyRootfs: boolean;
  runAsUser?: number;
  runAsGroup?: number;
  supplementalGroups: number[];
  seccompProfile?: string;
}

export type SandboxState = 'ready' | 'notready';

export interface VmInfo {
  /** Where QEMU's sockets, pidfile and console log live; the backend's reattach() takes it. */
  runDir: string;
  pid: number;
  accelerator: string;
  profile: string;
  vcpus: number;
  memoryMiB: number;
  /** Which VM backend started it (src/vm/pod-vm.ts); absent in records from before backends: "qemu". */
  backend?: VmBackendName;
  /** The VM template this sandbox's VM was cloned from (src/pod/vm-templates.ts); absent: a cold boot. */
  template?: string;
}

/** One image disk hot-plugged into a sandbox VM, shared by all its containers that use the image. */
export interface PluggedImage {
  imageId: string;
  diskId: string;
  serial: string;
  /** Where the agent mounted the read-only erofs in the guest. */
  guestMountPoint: string;
}

/** Guest paths of the files the sandbox shares with its containers (written by the agent's sandbox setup). */
export interface SandboxFiles {
  hostname?: string;
  resolvConf?: string;
  hosts?: string;
}

export interface SandboxRecord {
  id: string;
  config: SandboxConfig;
  runtimeHandler: string;
  state: SandboxState;
  createdAt: Nanos;
  /** Why the sandbox is NOTREADY when it was not asked to stop (e.g. the VM died). */
  notReadyReason?: string;
  vm?: VmInfo;
  /** `cni`: attached to the named CNI network in the netns file; `loopback`: the node had no CNI config. */
  network: { mode: 'loopback' | 'cni'; ips: string[]; netns?: string; networkName?: string };
  images: PluggedImage[];
  /** Guest paths of the hostname, resolv.conf and hosts files the sandbox setup wrote. */
  guestFiles: SandboxFiles;
  /** The host directory and helper through which CRI mounts reach the guest (absent: no share). */
  share?: SandboxShareState;
}

export interface Mount {
  containerPath: string;
  hostPath: string;
  readonly: boolean;
  selinuxRelabel: boolean;
  propagation: 'PRIVATE' | 'HOST_TO_CONTAINER' | 'BIDIRECTIONAL';
  /** Read-only for the mounts below the source too (needs readonly). */
  recursiveReadOnly?: boolean;
  /** An image volume: this image (reference or id) is mounted read-only instead of hostPath. */
  image?: string;
  /** Image volumes: the path inside the image to mount ('' or absent: its root). */
  imageSubPath?: string;
  /** The CRI asked for an id-mapped mount (uid/gid mappings). */
  idMapped?: boolean;
}

export interface Device {
  containerPath: string;
  hostPath: string;
  permissions: string;
}

/** A CRI SecurityProfile (seccomp or AppArmor); the new field wins over the deprecated path strings. */
export interface SecurityProfile {
  type: 'RuntimeDefault' | 'Unconfined' | 'Localhost';
  /** Localhost only: the profile file's absolute path on the node (seccomp) or the profile's name (AppArmor). */
  localhostRef: string;
}

export interface ContainerSecurity {
  privileged: boolean;
  readonlyRootfs: boolean;
  runAsUser?: number;
  runAsGroup?: number;
  runAsUsername: string;
  supplementalGroups: number[];
  addCapabilities: string[];
  dropCapabilities: string[];
  noNewPrivs: boolean;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  namespaceOptions: NamespaceOptions;
  /** Merge (default): the pod's groups plus the image's /etc/group memberships; Strict: the pod's only. */
  supplementalGroupsPolicy?: 'Merge' | 'Strict';
  /** Absent: not set by kubelet, which means unconfined (as containerd). */
  seccomp?: SecurityProfile;
  apparmor?: SecurityProfile;
}

export interface ContainerConfig {
  metadata: ContainerMetadata;
  /** The image as kubelet names it (ImageSpec.image): a reference or an id. */
  image: string;
  command: string[];
  args: string[];
  workingDir: string;
  envs: Array<{ key: string; value: string }>;
  mounts: Mount[];
  devices: Device[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
  logPath: string;
  stdin: boolean;
  stdinOnce: boolean;
  tty: boolean;
  resources?: LinuxResources;
  /** CRI stop_signal (e.g. "SIGQUIT"); the image's StopSignal applies when absent. */
  stopSignal?: string;
  security: ContainerSecurity;
}

export type ContainerState = 'created' | 'running' | 'exited' | 'unknown';

export interface ContainerRecord {
  id: string;
  sandboxId: string;
  config: ContainerConfig;
  state: ContainerState;
  createdAt: Nanos;
  startedAt?: Nanos;
  finishedAt?: Nanos;
  exitCode?: number;
  /** Completed | Error | OOMKilled | a VM-death reason. */
  reason?: string;
  message?: string;
  imageId: string;
  /** The digest reference kubelet shows as imageRef (repo@sha256:…), or the id when the image has none. */
  imageRef: string;
  /** Absolute path of the CRI log file (sandbox log_directory joined with log_path), '' if none. */
  logFile: string;
  /** Guest-side process id of the container's init (another container may join its PID namespace). */
  guestPid?: number;
  /** The image's StopSignal as a number (SIGTERM when the image names none). */
  stopSignal: number;
  /** The uid, gid and groups the container's process was given (ContainerStatus.user). */
  user?: { uid: number; gid: number; additionalGids: number[] };
}
