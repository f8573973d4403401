/**
 * TypeScript shapes of the agent API messages (proto/agent.proto) as
 * protobufjs presents them: camelCase fields, 64-bit integers as numbers,
 * enums as their names, bytes as Uint8Array. Requests may leave fields out.
 */
export type Empty = Record<string, never>;

export interface HealthResponse { status: string; uptimeSeconds: number; agentPid: number; starts: number; agentStartUptimeSeconds: number }
export interface VersionResponse { agentVersion: string; apiVersion: string; kernelRelease: string; nodeVersion: string; crunVersion: string }

export interface HostEntry { ip: string; names: string[] }
export interface DnsConfig { servers?: string[]; searches?: string[]; options?: string[] }
export interface SetupSandboxRequest {
  hostname?: string;
  dns?: DnsConfig;
  hosts?: HostEntry[];
  sysctls?: Record<string, string>;
  clockUnixNanos?: number;
  entropy?: Uint8Array;
  sharedFsTag?: string;
}

export interface MountDiskRequest { serial?: string; scsiId?: number; lun?: number; mountPoint: string; fsType?: string; readWrite?: boolean; waitMs?: number }
export interface MountDiskResponse { device: string }
export interface MountOverlayRequest { lowerDirs: string[]; target: string; upperSizeBytes?: number }
export interface MountOverlayResponse { upperDir: string }
export interface UnmountRequest { path: string; removeDir?: boolean }
export interface ReadFileRequest { root: string; path: string; maxBytes?: number }
export interface ReadFileResponse { exists: boolean; data: Uint8Array }
export interface ResolvePathRequest { root: string; path: string }
export interface ResolvePathResponse { exists: boolean; path: string; directory: boolean }

export interface CreateContainerRequest { containerId: string; ociSpecJson: Uint8Array; stdin?: boolean }
export interface StartContainerRequest { containerId: string }
export interface StartContainerResponse { pid: number }
export interface User { uid: number; gid: number; additionalGids?: number[] }
export interface TtySize { rows: number; cols: number }
export interface ExecProcessRequest {
  containerId: string;
  execId: string;
  args: string[];
  env?: string[];
  cwd?: string;
  user?: User;
  tty?: boolean;
  stdin?: boolean;
  ttySize?: TtySize;
}
export interface ExecProcessResponse { pid: number }
/** A debug shell in the guest's root namespaces; its ProcessRef is { containerId: GUEST_SHELL_CONTAINER_ID, execId }. */
export interface StartGuestShellRequest { execId: string; ttySize?: TtySize; term?: string }
export interface ProcessRef { containerId: string; execId?: string }
export interface SignalProcessRequest extends ProcessRef { signal: number; all?: boolean }
export interface WaitProcessResponse { exitCode: number; oomKilled: boolean; exitedAtUnixNanos: number }
export interface DeleteContainerRequest { containerId: string; force?: boolean }
export interface ContainerInfo { containerId: string; state: 'created' | 'running' | 'stopped'; pid: number; exitCode: number }
export interface ListContainersResponse { containers: ContainerInfo[] }
export interface WriteStdinRequest extends ProcessRef { data: Uint8Array }
export interface WriteStdinResponse { written: number }
export interface ResizeTtyRequest extends ProcessRef { rows: number; cols: number }

export interface ContainerStatsResponse {
  cpu: { usageUsec: number; userUsec: number; systemUsec: number; throttledUsec: number };
  memory: { currentBytes: number; limitBytes: number; anonBytes: number; fileBytes: number; workingSetBytes: number; oomKills: number };
  pids: { current: number; limit: number };
  io: { readBytes: number; writeBytes: number; readOps: number; writeOps: number };
  timestampUnixNanos: number;
  /** null (absent) where the guest kernel or cgroup has no such file. */
  cpuPressure?: Pressure | null;
  memoryPressure?: Pressure | null;
  ioPressure?: Pressure | null;
  pageFaults?: { faults: number; majorFaults: number } | null;
  /** The container's tmpfs upper layer; null (absent) when unknown. */
  writableLayer?: { usedBytes: number; inodesUsed: number } | null;
}
export interface PressureLine { avg10: number; avg60: number; avg300: number; totalUsec: number }
export interface Pressure { some?: PressureLine | null; full?: PressureLine | null }

export interface LinuxResources {
  cpuPeriod?: number;
  cpuQuota?: number;
  cpuShares?: number;
  memoryLimitBytes?: number;
  memorySwapLimitBytes?: number;
  cpusetCpus?: string;
  cpusetMems?: string;
  hugepageLimits?: Array<{ pageSize: string; limitBytes: number }>;
  unified?: Record<string, string>;
}
export interface UpdateContainerResourcesRequest { containerId: string; resources: LinuxResources }
export interface UpdateContainerResourcesResponse { cgroup: Record<string, string> }

export interface NetworkInterface { mac: string; name: string; mtu?: number; addresses?: { cidr: string }[]; newMac?: string }
export interface Route { destination: string; gateway?: string; device?: string; source?: string; metric?: number }
export interface Neighbor { ip: string; mac: string; device: string }
export interface ConfigureNetworkRequest { interfaces?: NetworkInterface[]; routes?: Route[]; neighbors?: Neighbor[] }

export interface ProcessOutput { containerId: string; execId: string; stream: 'STDOUT' | 'STDERR'; data: Uint8Array }
export interface ProcessExit { containerId: string; execId: string; exitCode: number; oomKilled: boolean; exitedAtUnixNanos: number }
export interface GuestLog { source: 'AGENT' | 'KERNEL'; level: string; message: string; timeUnixNanos: number }
export interface AgentEvent { output?: ProcessOutput; exit?: ProcessExit; log?: GuestLog; event?: 'output' | 'exit' | 'log'; sequence: number }

// Streaming sessions (exec/attach output flow control, port-forward through the agent).
export interface PauseOutputRequest extends ProcessRef { paused: boolean }
export interface DialPortRequest { connectionId: string; port: number }
export interface PortData { data: Uint8Array }
export interface WritePortRequest { connectionId: string; data: Uint8Array }
export interface ClosePortRequest { connectionId: string; writeOnly?: boolean }
export interface PausePortRequest { connectionId: string; paused: boolean }

// Copied volumes (share mode "copy").
export interface VolumeEntry { path: string; kind: 'dir' | 'file' | 'symlink'; mode: number; data?: Uint8Array; stamp?: string }
export interface WriteVolumeRequest { volumeId: string; put: VolumeEntry[]; remove: string[] }
export interface ReadVolumeRequest { volumeId: string; paths: string[]; known?: VolumeEntry[]; withData?: boolean }
export interface ReadVolumeResponse { exists: boolean; entries: VolumeEntry[] }
export interface RemoveVolumeRequest { volumeId: string }
export interface WatchVolumesRequest { volumeIds: string[]; waitMs: number; known?: ReadVolumeRequest[] }
export interface WatchVolumesResponse { changed: string[]; reads?: ReadVolumeResponse[]; readIds?: string[] }

/** Every RPC: request and response types, keyed by method name. */
export interface AgentApi {
  Health: [Empty, HealthResponse];
  Version: [Empty, VersionResponse];
  SetupSandbox: [SetupSandboxRequest, Empty];
  MountDisk: [MountDiskRequest, MountDiskResponse];
  MountOverlay: [MountOverlayRequest, MountOverlayResponse];
  Unmount: [UnmountRequest, Empty];
  ReadFile: [ReadFileRequest, ReadFileResponse];
  ResolvePath: [ResolvePathRequest, ResolvePathResponse];
  CreateContainer: [CreateContainerRequest, Empty];
  StartContainer: [StartContainerRequest, StartContainerResponse];
  ExecProcess: [ExecProcessRequest, ExecProcessResponse];
  SignalProcess: [SignalProcessRequest, Empty];
  WaitProcess: [ProcessRef, WaitProcessResponse];
  DeleteContainer: [DeleteContainerRequest, Empty];
  ListContainers: [Empty, ListContainersResponse];
  WriteStdin: [WriteStdinRequest, WriteStdinResponse];
  CloseStdin: [ProcessRef, Empty];
  ResizeTty: [ResizeTtyRequest, Empty];
  ContainerStats: [{ containerId: string }, ContainerStatsResponse];
  SandboxStats: [Empty, ContainerStatsResponse];
  UpdateContainerResources: [UpdateContainerResourcesRequest, UpdateContainerResourcesResponse];
  StartGuestShell: [StartGuestShellRequest, ExecProcessResponse];
  ConfigureNetwork: [ConfigureNetworkRequest, Empty];
  PauseOutput: [PauseOutputRequest, Empty];
  WritePort: [WritePortRequest, Empty];
  ClosePort: [ClosePortRequest, Empty];
  PausePort: [PausePortRequest, Empty];
  Shutdown: [Empty, Empty];
  WriteVolume: [WriteVolumeRequest, Empty];
  ReadVolume: [ReadVolumeRequest, ReadVolumeResponse];
  RemoveVolume: [RemoveVolumeRequest, Empty];
  WatchVolumes: [WatchVolumesRequest, WatchVolumesResponse];
}

export type AgentMethod = keyof AgentApi;
