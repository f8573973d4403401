import type { ReadVolumeRequest, ReadVolumeResponse, WatchVolumesRequest, WatchVolumesResponse, WriteVolumeRequest } from '../agent-protocol/types.js';
import type { DnsConfig, LinuxResources, SandboxFiles } from './records.js';
import type { OciSpec } from './oci-spec.js';

/**
 * What the pod services need from the agent inside a sandbox VM. This is the
 * pod module's port; `agent-adapter.ts` implements it on top of the real
 * `AgentClient` (src/agent-client/), so the service logic reads in pod terms
 * and does not move when the wire API does.
 */
export interface GuestAgent {
  /** Hostname, /etc/resolv.conf from the pod's DNS config, /etc/hosts and sysctls for the whole VM. */
  setupSandbox(req: { hostname: string; dns?: DnsConfig; sysctls: Record<string, string>; podIps?: string[]; sharedFsTag?: string }): Promise<SandboxFiles>;
  /**
   * A template clone's first call: sets the guest's wall clock to the host's and reseeds its
   * kernel RNG with host random bytes (the clone resumed with the template's clock and RNG state).
   */
  renewIdentity(): Promise<void>;
  /** Gives the guest NIC (found by MAC) the pod's addresses, MTU and routes from the CNI result. */
  configureNetwork(nic: GuestNic): Promise<void>;
  /** Mounts a hot-plugged read-only image disk (found by its serial) once; returns the guest mount point. */
  mountImage(req: { imageId: string; serial: string }): Promise<{ mountPoint: string }>;
  /** A file from a mounted image (e.g. /etc/passwd for user names), or undefined when the image has none. */
  readImageFile(mountPoint: string, path: string): Promise<string | undefined>;
  /** Where `path` inside a mounted image leads (symlinks resolved inside the image), or undefined if nowhere. */
  resolveImagePath(mountPoint: string, path: string): Promise<string | undefined>;
  /** Where the agent will put a container's rootfs (the overlay over its image mount). */
  containerRootfs(containerId: string): string;
  /** Makes the overlay rootfs and creates (not starts) the container from the spec. */
  createContainer(req: CreateContainerRequest): Promise<void>;
  /** Starts the container's process; returns its guest pid. */
  startContainer(containerId: string): Promise<{ pid: number }>;
  signalContainer(containerId: string, signal: number): Promise<void>;
  /** Deletes the container and its rootfs; a container that is already gone is not an error. */
  deleteContainer(containerId: string): Promise<void>;
  containerState(containerId: string): Promise<GuestContainerState>;
  /** Ids of every container the agent knows. */
  listContainerIds(): Promise<string[]>;
  execSync(req: { containerId: string; argv: string[]; timeoutMs: number }): Promise<ExecSyncResult>;
  containerStats(containerIds: string[]): Promise<Map<string, GuestContainerStats>>;
  /** The guest's pod cgroup, the parent of every container's. */
  sandboxStats(): Promise<GuestStats>;
  /** New cgroup limits for a container, applied in place; answers the guest's limit files as they now are. */
  updateContainerResources(containerId: string, resources: LinuxResources): Promise<Record<string, string>>;
  onOutput(listener: (ev: { containerId: string; stream: 'stdout' | 'stderr'; data: Uint8Array }) => void): void;
  onExit(listener: (ev: GuestExit) => void): void;
  // Streaming sessions (exec/attach/port-forward); execId '' is the container's own process.
  /** Sends a process's output and exit to `listener` until the returned function is called. */
  routeProcess(containerId: string, execId: string, listener: ProcessListener): () => void;
  startExec(req: { containerId: string; execId: string; argv: string[]; tty: boolean; stdin: boolean; ttySize?: { rows: number; cols: number } }): Promise<void>;
  writeStdin(containerId: string, execId: string, data: Uint8Array): Promise<void>;
  closeStdin(containerId: string, execId: string): Promise<void>;
  resizeTty(containerId: string, execId: string, rows: number, cols: number): Promise<void>;
  /** Holds one process's output back in the guest (its streaming client is slow). */
  pauseProcessOutput(containerId: string, execId: string, paused: boolean): Promise<void>;
  killExec(containerId: string, execId: string): Promise<void>;
  /** A TCP connection to 127.0.0.1:port inside the VM, made by the agent. */
  dialPort(port: number, onData: (data: Uint8Array) => void): Promise<GuestPortConnection>;
  /** The connection to the agent is gone (VM died, or closed). */
  onClose(listener: (err?: Error) => void): void;
  /** The guest opened or closed its end of the agent port (QMP VSERPORT_CHANGE): make sure the channel still reaches the agent it subscribed to. */
  portChanged(): void;
  /** The guest broke the protocol; its channel is closed for good (the sandbox cannot be trusted to speak). */
  onProtocolError(listener: (reason: string) => void): void;
  /** Stop taking the guest's output for a while (the host's log writers are behind); resumeOutput undoes it. */
  pauseOutput(): void;
  resumeOutput(): void;
  /** The agent's liveness and how long the guest took to start it (guest clock). */
  health(): Promise<GuestHealth>;
  /** A debug shell in the guest itself (root namespaces, on a tty); its process is (GUEST_SHELL_CONTAINER_ID, execId), routed like an exec. */
  startGuestShell(req: { execId: string; ttySize?: { rows: number; cols: number }; term?: string }): Promise<void>;
  /** Agent and guest kernel log lines, as the agent forwards them. */
  onGuestLog(listener: (line: { source: 'agent' | 'kernel'; level: string; message: string; timeMs: number }) => void): void;
  // Copied volumes (share mode "copy", src/volume/copy-share.ts).
  /** Makes or replaces entries of a volume copy in the guest, then removes paths. */
  writeVolume(req: WriteVolumeRequest): Promise<void>;
  /** A volume copy's manifest (no paths) or the contents of the named files. */
  readVolume(req: ReadVolumeRequest): Promise<ReadVolumeResponse>;
  removeVolume(volumeId: string): Promise<void>;
  /** Waits at most `req.waitMs` for a change in the guest to any of these volume copies; answers the ones that changed (and some of their reads). */
  watchVolumes(req: WatchVolumesRequest): Promise<WatchVolumesResponse>;
  /** Asks the guest to power off; QEMU then exits. */
  shutdown(): Promise<void>;
  close(): void;
}

export interface GuestNic {
  /** The MAC QEMU gave the NIC (finds it in the guest). */
  mac: string;
  /** The CNI interface's MAC, which the guest NIC takes. */
  newMac: string;
  mtu: number;
  addresses: Array<{ cidr: string }>;
  routes: Array<{ destination: string; gateway?: string }>;
}

export interface ProcessListener {
  output(stream: 'stdout' | 'stderr', data: Uint8Array): void;
  exit(exitCode: number): void;
  /** No output or exit can come any more (the VM or its agent channel is gone). */
  gone(reason: string): void;
}

export interface GuestPortConnection {
  write(data: Uint8Array): Promise<void>;
  closeWrite(): Promise<void>;
  close(): void;
  pause(paused: boolean): Promise<void>;
  readonly ended: Promise<void>;
}

export interface GuestHealth {
  agentPid: number;
  /** How many times the agent has started in this VM (more than 1: it was restarted). */
  starts: number;
  guestUptimeSeconds: number;
  /** Guest uptime when the agent process started: the kernel and init's share of the boot. */
  agentStartUptimeSeconds: number;
}

export interface CreateContainerRequest {
  containerId: string;
  spec: OciSpec;
  imageMountPoint: string;
  stdin: boolean;
  stdinOnce: boolean;
  tty: boolean;
}

export interface GuestExit {
  containerId: string;
  exitCode: number;
  oomKilled: boolean;
  /** When the agent saw the exit (ms since epoch); the host's clock is used when absent. */
  exitedAtMs?: number;
}

export type GuestContainerState =
  | { status: 'created' | 'running'; pid: number }
  | { status: 'exited'; exitCode: number; oomKilled: boolean; exitedAtMs?: number }
  | { status: 'missing' };

export interface ExecSyncResult {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
  timedOut: boolean;
}

export interface GuestContainerStats extends GuestStats {
  memoryAvailableBytes?: number;
  /** Bytes and inodes the container's writable layer uses, when the agent can tell. */
  writableLayer?: { bytes: number; inodes: number };
}

/** One PSI line: % of time stalled over 10/60/300 s and the total stall time. */
export interface PressureLine {
  avg10: number;
  avg60: number;
  avg300: number;
  totalUsec: number;
}

export interface Pressure {
  some?: PressureLine;
  full?: PressureLine;
}

export interface ResourcePressure {
  cpu?: Pressure;
  memory?: Pressure;
  io?: Pressure;
}

/** Pod-level numbers: the sum over the pod's containers, or the guest's pod cgroup where the agent reads it (the VM is the pod). */
export interface GuestStats {
  timestampMs: number;
  cpuUsageNanos: bigint;
  memoryWorkingSetBytes: number;
  memoryUsageBytes: number;
  memoryRssBytes: number;
  pageFaults?: number;
  majorPageFaults?: number;
  processCount: number;
  psi: ResourcePressure;
  /** The rest of the cgroup's counters, for the Prometheus-style metrics. */
  detail: {
    cpuUserNanos: bigint;
    cpuSystemNanos: bigint;
    cpuThrottledNanos: bigint;
    memoryCacheBytes: number;
    /** undefined: no limit. */
    memoryLimitBytes?: number;
    oomKills: number;
    io: { readBytes: number; writeBytes: number; readOps: number; writeOps: number };
  };
}
