import { randomBytes } from 'node:crypto';
import { AgentClient, type ProcessExit, type ProcessOutput } from '../agent-client/index.js';
import { GUEST_CONTAINERS_DIR, GUEST_IMAGES_DIR, GUEST_SHELL_CONTAINER_ID } from '../agent-protocol/guest-paths.js';
import { isPodvisorError, messageOf, unavailable } from '../errors.js';
import { capMessage } from '../ttrpc/status.js';
import { logger } from '../log.js';
import type { AgentConnector } from './pod-context.js';
import type {
  CreateContainerRequest, ExecSyncResult, GuestAgent, GuestContainerState, GuestContainerStats, GuestExit, GuestNic, GuestPortConnection, GuestStats,
  Pressure, ProcessListener, GuestHealth,
} from './guest-agent.js';
import type { ContainerStatsResponse, Pressure as WirePressure, ReadVolumeRequest, ReadVolumeResponse, WatchVolumesRequest, WatchVolumesResponse, WriteVolumeRequest } from '../agent-protocol/types.js';
import type { SandboxFiles } from './records.js';
import type { DnsConfig, LinuxResources } from './records.js';

const log = logger('pod-agent');
/** How long a streaming exec's process may take to start in the guest. */
const EXEC_START_TIMEOUT_MS = 180_000;

/** A stopped process's exit status is already known to the agent: asking for it should be quick. */
const WAIT_STOPPED_MS = 5_000;
/** Guest log lines reach the daemon's log at most this often (per second, per sandbox) and this long. */
const GUEST_LOG_LINES_PER_SECOND = 20;
const GUEST_LOG_MAX_CHARS = 1024;
/** The pod NIC's name in the guest, as CNI names it in the pod netns. */
const GUEST_IFNAME = 'eth0';
/** ExecSync keeps at most this much of each stream (as containerd caps it), so a chatty command cannot exhaust the daemon. */
const EXEC_SYNC_MAX_STREAM = 16 * 1024 * 1024;

/**
 * The pod module's GuestAgent on top of the agent API client: picks guest
 * paths, turns container output and exits into pod events, and builds the
 * composite operations (overlay + create, delete + unmount, exec + collect).
 */
export class AgentAdapter implements GuestAgent {
  private readonly execWaiters = new Map<string, { resolve: (exit: ProcessExit) => void; reject: (err: Error) => void }>();
  private readonly guestLogWindow = { startedAt: 0, lines: 0, suppressed: 0 };
  private readonly execOutput = new Map<string, { stdout: Buffer[]; stderr: Buffer[]; bytes: { stdout: number; stderr: number } }>();
  /** Streaming sessions' listeners, by process (several attaches may watch one container). */
  private readonly routes = new Map<string, Set<ProcessListener>>();

  constructor(private readonly client: AgentClient) {
    client.on('output', (o) => this.routeExecOutput(o));
    client.on('exit', (e) => {
      if (e.execId) this.execWaiters.get(execKey(e.containerId, e.execId))?.resolve(e);
      for (const l of this.routes.get(execKey(e.containerId, e.execId)) ?? []) l.exit(e.exitCode);
    });
    client.on('log', (l) => this.logGuestLine(l.source, l.level, l.message));
    // An exec waiting for its exit event must not wait forever once no event can come (L3).
    client.on('gone', (reason) => {
      for (const waiter of this.execWaiters.values()) waiter.reject(unavailable(`the agent channel is gone: ${reason}`));
      for (const set of this.routes.values()) for (const l of set) l.gone(`the agent channel is gone: ${reason}`);
    });
  }

  /** Guest log lines, rate-limited and cut: the guest decides how many and how long they are (L11). */
  private logGuestLine(source: string, level: string, message: string): void {
    const w = this.guestLogWindow;
    const now = Date.now();
    if (now - w.startedAt >= 1000) {
      if (w.suppressed > 0) log.debug({ suppressed: w.suppressed }, 'guest log lines dropped (rate limit)');
      w.startedAt = now;
      w.lines = 0;
      w.suppressed = 0;
    }
    if (++w.lines > GUEST_LOG_LINES_PER_SECOND) {
      w.suppressed++;
      return;
    }
    log.debug({ source: String(source).slice(0, 64), level: String(level).slice(0, 16), message: capMessage(message, GUEST_LOG_MAX_CHARS) }, 'guest log');
  }

  async setupSandbox(req: { hostname: string; dns?: DnsConfig; sysctls: Record<string, string>; podIps?: string[]; sharedFsTag?: string }): Promise<SandboxFiles> {
    await this.client.setupSandbox({
      hostname: req.hostname,
      ...(req.dns ? { dns: req.dns } : {}),
      // The pod's own name resolves to itself (its pod IPs when it has a network), as in any pod's /etc/hosts.
      hosts: (req.podIps?.length ? req.podIps : ['127.0.0.1']).map((ip) => ({ ip, names: [req.hostname] })),
      sysctls: req.sysctls,
      // No clock: a cold-booted guest reads the RTC (to the second, as the agent could set it), and
      // setting it costs a process start in the guest. Template clones are where the clock needs fixing.
      entropy: randomBytes(32),
      ...(req.sharedFsTag ? { sharedFsTag: req.sharedFsTag } : {}),
    });
    const hasDns = !!req.dns && (req.dns.servers.length > 0 || req.dns.searches.length > 0 || req.dns.options.length > 0);
    return { hostname: '/etc/hostname', hosts: '/etc/hosts', ...(hasDns ? { resolvConf: '/etc/resolv.conf' } : {}) };
  }

  async renewIdentity(): Promise<void> {
    // Microseconds of the host's wall clock (Date.now() has only milliseconds).
    const nowNanos = Math.round((performance.timeOrigin + performance.now()) * 1e6);
    await this.client.setupSandbox({ clockUnixNanos: nowNanos, entropy: randomBytes(64) });
  }

  async configureNetwork(nic: GuestNic): Promise<void> {
    await this.client.configureNetwork({
      interfaces: [{ mac: nic.mac, newMac: nic.newMac, name: GUEST_IFNAME, mtu: nic.mtu, addresses: nic.addresses }],
      routes: nic.routes.map((r) => ({ ...r, device: GUEST_IFNAME })),
    });
  }

  async mountImage(req: { imageId: string; serial: string }): Promise<{ mountPoint: string }> {
    const mountPoint = `${GUEST_IMAGES_DIR}/${req.imageId.replace(/^sha256:/, '').slice(0, 32)}`;
    await this.client.mountDisk({ serial: req.serial, mountPoint, fsType: 'erofs' });
    return { mountPoint };
  }

  async readImageFile(mountPoint: string, path: string): Promise<string | undefined> {
    const res = await this.client.readFile({ root: mountPoint, path });
    return res.exists ? Buffer.from(res.data).toString('utf8') : undefined;
  }

  async resolveImagePath(mountPoint: string, path: string): Promise<string | undefined> {
    const res = await this.client.resolvePath({ root: mountPoint, path });
    return res.exists ? res.path : undefined;
  }

  containerRootfs(containerId: string): string {
    return `${GUEST_CONTAINERS_DIR}/${containerId}/rootfs`;
  }

  async createContainer(req: CreateContainerRequest): Promise<void> {
    const target = this.containerRootfs(req.containerId);
    await this.client.mountOverlay({ lowerDirs: [req.imageMountPoint], target });
    try {
      await this.client.createContainer({
        containerId: req.containerId,
        ociSpecJson: Buffer.from(JSON.stringify(req.spec)),
        stdin: req.stdin,
      });
    } catch (e) {
      await this.client.unmount({ path: target, removeDir: true }).catch(() => undefined);
      throw e;
    }
  }

  async startContainer(containerId: string): Promise<{ pid: number }> {
    return { pid: await this.client.startContainer(containerId) };
  }

  signalContainer(containerId: string, signal: number): Promise<void> {
    return this.client.signalProcess({ containerId, signal });
  }

  async deleteContainer(containerId: string): Promise<void> {
    await this.client.deleteContainer({ containerId, force: true });
    await this.client.unmount({ path: this.containerRootfs(containerId), removeDir: true });
  }

  async containerState(containerId: string): Promise<GuestContainerState> {
    const { containers } = await this.client.listContainers();
    const info = containers.find((c) => c.containerId === containerId);
    if (!info) return { status: 'missing' };
    if (info.state === 'created' || info.state === 'running') return { status: info.state, pid: info.pid };
    // WaitProcess adds the OOM flag and the exit time; a guest that does not answer it
    // quickly gets the exit code it listed (no guest call waits without a deadline: H4, L3).
    const exit = await this.client.waitProcess({ containerId }, WAIT_STOPPED_MS).catch(() => undefined);
    if (!exit) return { status: 'exited', exitCode: info.exitCode, oomKilled: false };
    return { status: 'exited', exitCode: exit.exitCode, oomKilled: exit.oomKilled, exitedAtMs: exit.exitedAtUnixNanos / 1e6 || undefined };
  }

  async listContainerIds(): Promise<string[]> {
    return (await this.client.listContainers()).containers.map((c) => c.containerId);
  }

  async execSync(req: { containerId: string; argv: string[]; timeoutMs: number }): Promise<ExecSyncResult> {
    const execId = `sync-${randomBytes(8).toString('hex')}`;
    const key = execKey(req.containerId, execId);
    const output = { stdout: [] as Buffer[], stderr: [] as Buffer[], bytes: { stdout: 0, stderr: 0 } };
    this.execOutput.set(key, output);
    // The exit event comes after the process's last output on the same stream, so waiting for it collects everything.
    const exited = new Promise<ProcessExit>((resolve, reject) => this.execWaiters.set(key, { resolve, reject }));
    exited.catch(() => undefined); // raced below; a rejection before the race starts is not unhandled
    let timer: NodeJS.Timeout | undefined;
    try {
      await this.client.execProcess({ containerId: req.containerId, execId, args: req.argv });
      const timeout = req.timeoutMs > 0
        ? new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), req.timeoutMs); })
        : new Promise<never>(() => undefined);
      const result = await Promise.race([exited, timeout]);
      if (result === 'timeout') {
        await this.client.signalProcess({ containerId: req.containerId, execId, signal: 9 }).catch(() => undefined);
        return { stdout: Buffer.concat(output.stdout), stderr: Buffer.concat(output.stderr), exitCode: -1, timedOut: true };
      }
      return { stdout: Buffer.concat(output.stdout), stderr: Buffer.concat(output.stderr), exitCode: result.exitCode, timedOut: false };
    } finally {
      clearTimeout(timer);
      this.execWaiters.delete(key);
      this.execOutput.delete(key);
    }
  }

  async containerStats(containerIds: string[]): Promise<Map<string, GuestContainerStats>> {
    const out = new Map<string, GuestContainerStats>();
    await Promise.all(containerIds.map(async (id) => {
      try {
        const s = await this.client.containerStats(id);
        out.set(id, guestStatsOf(s));
      } catch (e) {
        // A container that exited between listing and asking has no stats; that is not an error for a list.
        if (!isPodvisorError(e)) log.warn({ container: id, err: messageOf(e) }, 'container stats failed');
      }
    }));
    return out;
  }

  routeProcess(containerId: string, execId: string, listener: ProcessListener): () => void {
    const key = execKey(containerId, execId);
    let set = this.routes.get(key);
    if (!set) this.routes.set(key, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.routes.get(key) === set) this.routes.delete(key);
    };
  }

  async startExec(req: { containerId: string; execId: string; argv: string[]; tty: boolean; stdin: boolean; ttySize?: { rows: number; cols: number } }): Promise<void> {
    // Starting a process is crun under emulation: allow for a busy guest (ExecSync's 60 s default is for short commands).
    await this.client.call('ExecProcess', {
      containerId: req.containerId, execId: req.execId, args: req.argv, tty: req.tty, stdin: req.stdin,
      ...(req.ttySize ? { ttySize: req.ttySize } : {}),
    }, EXEC_START_TIMEOUT_MS);
  }

  async writeStdin(containerId: string, execId: string, data: Uint8Array): Promise<void> {
    await this.client.writeStdin({ containerId, execId }, data);
  }

  closeStdin(containerId: string, execId: string): Promise<void> {
    return this.client.closeStdin({ containerId, execId });
  }

  resizeTty(containerId: string, execId: string, rows: number, cols: number): Promise<void> {
    return this.client.resizeTty({ containerId, execId }, rows, cols);
  }

  pauseProcessOutput(containerId: string, execId: string, paused: boolean): Promise<void> {
    return this.client.pauseOutput({ containerId, execId }, paused);
  }

  killExec(containerId: string, execId: string): Promise<void> {
    return this.client.signalProcess({ containerId, execId, signal: 9 });
  }

  async dialPort(port: number, onData: (data: Uint8Array) => void): Promise<GuestPortConnection> {
    const connectionId = `pf-${randomBytes(8).toString('hex')}`;
    const { ended } = await this.client.dialPort({ connectionId, port }, onData);
    const client = this.client;
    return {
      ended,
      write: (data) => client.writePort(connectionId, data),
      closeWrite: () => client.closePort(connectionId, true),
      close: () => void client.closePort(connectionId, false).catch(() => undefined),
      pause: (paused) => client.pausePort(connectionId, paused),
    };
  }

  async sandboxStats(): Promise<GuestStats> {
    return guestStatsOf(await this.client.sandboxStats());
  }

  async updateContainerResources(containerId: string, r: LinuxResources): Promise<Record<string, string>> {
    const { cgroup } = await this.client.updateContainerResources({
      containerId,
      resources: {
        cpuPeriod: r.cpuPeriod,
        cpuQuota: r.cpuQuota,
        cpuShares: r.cpuShares,
        memoryLimitBytes: r.memoryLimitInBytes,
        memorySwapLimitBytes: r.memorySwapLimitInBytes ?? 0,
        cpusetCpus: r.cpusetCpus,
        cpusetMems: r.cpusetMems,
        hugepageLimits: (r.hugepageLimits ?? []).map((h) => ({ pageSize: h.pageSize, limitBytes: h.limitBytes })),
        unified: r.unified ?? {},
      },
    });
    return cgroup;
  }

  onOutput(listener: (ev: { containerId: string; stream: 'stdout' | 'stderr'; data: Uint8Array }) => void): void {
    this.client.on('output', (o) => {
      if (!o.execId) listener({ containerId: o.containerId, stream: o.stream === 'STDERR' ? 'stderr' : 'stdout', data: o.data });
    });
  }

  onExit(listener: (ev: GuestExit) => void): void {
    this.client.on('exit', (e) => {
      if (!e.execId) {
        listener({ containerId: e.containerId, exitCode: e.exitCode, oomKilled: e.oomKilled, exitedAtMs: e.exitedAtUnixNanos / 1e6 || undefined });
      }
    });
  }

  onClose(listener: (err?: Error) => void): void {
    this.client.on('disconnect', (reason) => listener(new Error(reason)));
  }

  portChanged(): void {
    this.client.portChanged();
  }

  onProtocolError(listener: (reason: string) => void): void {
    this.client.on('protocolError', listener);
  }

  pauseOutput(): void {
    this.client.pause();
  }

  resumeOutput(): void {
    this.client.resume();
  }

  shutdown(): Promise<void> {
    return this.client.shutdown();
  }

  close(): void {
    this.client.close();
  }

  writeVolume(req: WriteVolumeRequest): Promise<void> {
    return this.client.writeVolume(req);
  }

  readVolume(req: ReadVolumeRequest): Promise<ReadVolumeResponse> {
    return this.client.readVolume(req);
  }

  removeVolume(volumeId: string): Promise<void> {
    return this.client.removeVolume(volumeId);
  }

  watchVolumes(req: WatchVolumesRequest): Promise<WatchVolumesResponse> {
    return this.client.watchVolumes(req);
  }

  async health(): Promise<GuestHealth> {
    const h = await this.client.health();
    return { agentPid: h.agentPid, starts: h.starts, guestUptimeSeconds: h.uptimeSeconds, agentStartUptimeSeconds: h.agentStartUptimeSeconds };
  }

  async startGuestShell(req: { execId: string; ttySize?: { rows: number; cols: number }; term?: string }): Promise<void> {
    // A shell starts quickly, but a busy TCG guest may take seconds: allow as much as an exec.
    await this.client.call('StartGuestShell', { execId: req.execId, ...(req.ttySize ? { ttySize: req.ttySize } : {}), ...(req.term ? { term: req.term } : {}) }, EXEC_START_TIMEOUT_MS);
  }

  onGuestLog(listener: (line: { source: 'agent' | 'kernel'; level: string; message: string; timeMs: number }) => void): void {
    // Cut like the daemon's own copy (logGuestLine); GuestLogFile bounds how much is kept.
    this.client.on('log', (l) => listener({
      source: l.source === 'KERNEL' ? 'kernel' : 'agent',
      level: String(l.level).slice(0, 16),
      message: capMessage(l.message, GUEST_LOG_MAX_CHARS),
      timeMs: l.timeUnixNanos / 1e6,
    }));
  }

  private routeExecOutput(o: ProcessOutput): void {
    for (const l of this.routes.get(execKey(o.containerId, o.execId)) ?? []) l.output(o.stream === 'STDERR' ? 'stderr' : 'stdout', o.data);
    if (!o.execId) return;
    const sink = this.execOutput.get(execKey(o.containerId, o.execId));
    if (!sink) return;
    const stream = o.stream === 'STDERR' ? 'stderr' : 'stdout';
    const room = EXEC_SYNC_MAX_STREAM - sink.bytes[stream];
    if (room <= 0) return;
    const piece = Buffer.from(o.data.subarray(0, room));
    sink[stream].push(piece);
    sink.bytes[stream] += piece.length;
  }
}

function execKey(containerId: string, execId: string): string {
  return `${containerId}/${execId}`;
}

/** The connector podvisord uses: the real agent client, wrapped. */
export const connectAgent: AgentConnector = async (socketPath, deadline, opts = {}) => {
  const client = await AgentClient.connect(socketPath, { deadlineMs: Math.max(1000, deadline - Date.now()), ...opts });
  return new AgentAdapter(client);
};

/** A cgroup's numbers from the agent in the pod module's terms. */
function guestStatsOf(s: ContainerStatsResponse): GuestContainerStats {
  return {
    // The host's clock: the guest's is set only to the second, and rates need one clock.
    timestampMs: Date.now(),
    cpuUsageNanos: BigInt(s.cpu.usageUsec) * 1000n,
    memoryWorkingSetBytes: s.memory.workingSetBytes,
    memoryUsageBytes: s.memory.currentBytes,
    memoryRssBytes: s.memory.anonBytes,
    ...(s.memory.limitBytes > 0 ? { memoryAvailableBytes: Math.max(0, s.memory.limitBytes - s.memory.workingSetBytes) } : {}),
    ...(s.pageFaults ? { pageFaults: s.pageFaults.faults, majorPageFaults: s.pageFaults.majorFaults } : {}),
    processCount: s.pids.current,
    ...(s.writableLayer ? { writableLayer: { bytes: s.writableLayer.usedBytes, inodes: s.writableLayer.inodesUsed } } : {}),
    psi: {
      ...(s.cpuPressure ? { cpu: pressureOf(s.cpuPressure) } : {}),
      ...(s.memoryPressure ? { memory: pressureOf(s.memoryPressure) } : {}),
      ...(s.ioPressure ? { io: pressureOf(s.ioPressure) } : {}),
    },
    detail: {
      cpuUserNanos: BigInt(s.cpu.userUsec) * 1000n,
      cpuSystemNanos: BigInt(s.cpu.systemUsec) * 1000n,
      cpuThrottledNanos: BigInt(s.cpu.throttledUsec) * 1000n,
      memoryCacheBytes: s.memory.fileBytes,
      ...(s.memory.limitBytes > 0 ? { memoryLimitBytes: s.memory.limitBytes } : {}),
      oomKills: s.memory.oomKills,
      io: s.io,
    },
  };
}

/** The agent's PSI answer without its wire nulls. */
function pressureOf(p: WirePressure): Pressure {
  return { ...(p.some ? { some: p.some } : {}), ...(p.full ? { full: p.full } : {}) };
}
