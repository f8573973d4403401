import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { deadlineExceeded, internal, isPodvisorError, messageOf, unavailable } from '../errors.js';
import { capMessage } from '../ttrpc/status.js';
import { logger } from '../log.js';
import { TtrpcClient } from '../ttrpc/index.js';
import { agentCodecs, eventCodec, getEventsRequestCodec } from '../agent-protocol/api.js';
import { AGENT_SERVICE, codec } from '../agent-protocol/schema.js';

import type {
  AgentApi, AgentMethod, ConfigureNetworkRequest, ContainerStatsResponse, UpdateContainerResourcesRequest, UpdateContainerResourcesResponse, CreateContainerRequest, DeleteContainerRequest, ExecProcessRequest,
  GuestLog, HealthResponse, ListContainersResponse, MountDiskRequest, MountDiskResponse, MountOverlayRequest, MountOverlayResponse, ProcessExit,
  ProcessOutput, ProcessRef, ReadFileRequest, DialPortRequest, PortData, ReadFileResponse, ReadVolumeRequest, ReadVolumeResponse, WatchVolumesRequest, WatchVolumesResponse, WriteVolumeRequest, ResolvePathRequest, ResolvePathResponse, SetupSandboxRequest, SignalProcessRequest, UnmountRequest, VersionResponse, WaitProcessResponse,
} from '../agent-protocol/types.js';

const log = logger('agent-client');

/** Told the method and seconds of every finished call (podvisord's metrics; the guest never sets it). */
let callObserver: ((method: string, seconds: number) => void) | undefined;
export function observeAgentCalls(observer: (method: string, seconds: number) => void): void {
  callObserver = observer;
}

export interface AgentConnectOptions {
  /** Give up connecting (or reconnecting) after this long. */
  deadlineMs: number;
  /** How long the first Health probe may take; each probe that gets no answer doubles it, up to MAX_PROBE_TIMEOUT_MS. */
  probeTimeoutMs?: number;
  /** Default per-call timeout; every call has one (WaitProcess included). */
  callTimeoutMs?: number;
  /**
   * Resolves when the guest opens its end of the port (QMP VSERPORT_CHANGE): the first
   * connect then sends a fresh probe at once instead of waiting out one sent too early.
   */
  portOpened?: Promise<void>;
}

/**
 * The largest reply the host decodes per method. A guest chooses reply sizes,
 * and a 4 MiB reply of empty repeated entries decodes to ~128 MiB of objects;
 * none of these answers is legitimately anywhere near that.
 */
const MAX_REPLY_BYTES: Partial<Record<AgentMethod, number>> = {
  ReadFile: 1 << 20,
  // A copied volume's manifest or a batch of its files (the host asks for at most VOLUME_READ_BATCH_BYTES of data).
  ReadVolume: 4 << 20,
  WatchVolumes: 4 << 20,
  ListContainers: 256 << 10,
};
const DEFAULT_MAX_REPLY_BYTES = 64 << 10;

/**
 * The most fields the host decodes per method, counted on the wire first (field-count.ts): a
 * reply's cost is the objects it decodes to, not its bytes (4 MiB of empty entries: ~680 MiB and
 * ~25 s of the event loop). A copied volume's manifest lists at most 4096 entries of 5 fields
 * (agent/volume-copies.ts MAX_ENTRIES, the host's COPY_LIMITS); a long-poll answer carries at most
 * two manifests' worth, plus the ids of the volumes that changed.
 */
const VOLUME_MANIFEST_FIELDS = 4097 * 6 + 16;
const MAX_REPLY_FIELDS: Partial<Record<AgentMethod, number>> = {
  ReadVolume: VOLUME_MANIFEST_FIELDS,
  WatchVolumes: 2 * VOLUME_MANIFEST_FIELDS + 8192,
};

/** What a WatchVolumes long poll may take beyond the wait it asks for (a slow guest under TCG); a silent guest costs one call per wait + this. */
export const WATCH_VOLUMES_MARGIN_MS = 30_000;

/**
 * How long the session check after a port change waits for Health on the current channel. Generous:
 * an agent that answers at all answers within it even under TCG on a loaded host, and a check that
 * gives up on a live agent costs a needless reconnect.
 */
const SESSION_PROBE_MS = 5_000;

/** A guest that drops its channel over and over gets one warning per this many ms; the rest are counted. */
const DROP_WARN_INTERVAL_MS = 60_000;
/** The longest one Health probe waits (the first waits probeTimeoutMs; each miss doubles it). */
const MAX_PROBE_TIMEOUT_MS = 2_000;

export interface AgentClientEvents {
  output: [ProcessOutput];
  exit: [ProcessExit];
  log: [GuestLog];
  /** The channel dropped; calls wait for `connect` to succeed again or fail. */
  disconnect: [reason: string];
  /**
   * The guest broke the protocol (an undecodable frame or event): the channel
   * is closed for good and never reconnected, since a guest that does this is
   * not trusted to speak again.
   */
  protocolError: [reason: string];
  /** The client will never deliver anything again: closed, reconnect failed, or protocol error. */
  gone: [reason: string];
  /** A new channel is up and the event stream resubscribed. */
  reconnect: [];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Host side of the agent API over the VM's agent socket (a QEMU chardev unix
 * socket). `connect` retries until the agent answers Health, then subscribes
 * to GetEvents and re-emits output, exit and log events. If the channel drops
 * the client reconnects on its own (within the deadline) and resubscribes.
 */
export class AgentClient extends EventEmitter<AgentClientEvents> {
  private ttrpc: TtrpcClient | undefined;
  private connecting: Promise<void> | undefined;
  private closedByUser = false;
  private lastSequence = 0;
  private agentStarts: number | undefined;
  /** Shared by every connection so stream ids never repeat across reconnects. */
  private readonly streamIds = { next: 1 };
  private readonly codecs = agentCodecs();

  /** Pending until the guest first opens its port (connect only; later reconnects probe as before). */
  private portOpened: Promise<void> | undefined;

  private constructor(readonly socketPath: string, private readonly options: Required<Omit<AgentConnectOptions, 'portOpened'>>, portOpened?: Promise<void>) {
    super();
    this.portOpened = portOpened;
  }

  static async connect(socketPath: string, options: AgentConnectOptions): Promise<AgentClient> {
    const { portOpened, ...rest } = options;
    const client = new AgentClient(socketPath, { probeTimeoutMs: 100, callTimeoutMs: 60_000, ...rest }, portOpened);
    await client.establish();
    return client;
  }

  /** Events dropped by the guest's bounded queue while no host listened (sequence gaps). */
  droppedEvents = 0;
  /** Why the channel was closed for good after the guest broke the protocol. */
  protocolFailure: string | undefined;
  /** Channel drops since the last warning (L11: a guest can loop close/reopen). */
  private dropsSinceWarn = 0;
  private lastDropWarnAt = 0;

  get connected(): boolean {
    return !!this.ttrpc && !this.ttrpc.closed;
  }

  /** A session check after a port change, and whether another change came during it. */
  private sessionCheck: Promise<void> | undefined;
  private recheckSession = false;

  /**
   * The guest opened or closed its end of the agent port (QMP VSERPORT_CHANGE). The host's socket
   * to QEMU stays up through that, so whoever holds the port now may not be the agent this channel
   * subscribed to: root in the guest can kill the agent and take the port, and the guest init
   * starts a new agent, which never saw this session's GetEvents. So the session is checked: Health
   * on this channel, answered by the same agent start, means nothing changed (the change was the
   * agent's answer to a reconnect of ours, or a toggle it never saw); anything else (no answer
   * within SESSION_PROBE_MS, another start) drops the channel and connects afresh, which
   * resubscribes. One check at a time; changes during one make one more after it, so a guest
   * toggling its port costs at most a check per change QEMU reports (QEMU sends at most one
   * VSERPORT_CHANGE per second per port) and never more than one reconnect at a time.
   */
  portChanged(): void {
    if (this.closedByUser || this.protocolFailure) return;
    if (this.sessionCheck) {
      this.recheckSession = true;
      return;
    }
    this.sessionCheck = this.checkSession().finally(() => { this.sessionCheck = undefined; });
  }

  private async checkSession(): Promise<void> {
    do {
      this.recheckSession = false;
      // A connection being made is a new session already (changes meanwhile are the guest answering it).
      if (this.connecting) {
        await this.connecting.catch(() => undefined);
        continue;
      }
      const ttrpc = this.ttrpc;
      if (!ttrpc || ttrpc.closed || this.closedByUser || this.protocolFailure) return;
      let why: string | undefined;
      try {
        const payload = await ttrpc.call(AGENT_SERVICE, 'Health', this.codecs.Health.request.encode({}), { timeoutMs: SESSION_PROBE_MS });
        const starts = this.codecs.Health.response.decode(payload).starts;
        if (starts !== this.agentStarts) why = `the agent restarted (start ${this.agentStarts} -> ${starts})`;
      } catch (err) {
        why = `no Health answer on the channel: ${capMessage(messageOf(err), 200)}`;
      }
      if (!why || this.ttrpc !== ttrpc || this.closedByUser || this.protocolFailure) continue;
      log.debug({ socket: this.socketPath, why }, 'the guest reopened its agent port; connecting afresh');
      try {
        await this.reconnect();
      } catch (err) {
        if (this.closedByUser) return; // the sandbox is stopping: its guest closing the port is expected
        log.warn({ socket: this.socketPath, err: messageOf(err) }, 'agent reconnect after a port change failed');
        this.emit('gone', `the agent did not answer again after its port changed: ${messageOf(err)}`);
      }
    } while (this.recheckSession && !this.closedByUser && !this.protocolFailure);
  }

  /** Drops the current connection (the guest sees the host leave) and connects again. */
  async reconnect(): Promise<void> {
    this.ttrpc?.close();
    await this.establish();
  }

  close(): void {
    if (!this.closedByUser) this.emit('gone', 'the agent client was closed');
    this.closedByUser = true;
    this.ttrpc?.close();
    this.ttrpc = undefined;
  }

  health(): Promise<HealthResponse> { return this.call('Health', {}); }
  version(): Promise<VersionResponse> { return this.call('Version', {}); }
  setupSandbox(req: SetupSandboxRequest): Promise<void> { return this.call('SetupSandbox', req).then(() => undefined); }
  mountDisk(req: MountDiskRequest): Promise<MountDiskResponse> { return this.call('MountDisk', req); }
  mountOverlay(req: MountOverlayRequest): Promise<MountOverlayResponse> { return this.call('MountOverlay', req); }
  unmount(req: UnmountRequest): Promise<void> { return this.call('Unmount', req).then(() => undefined); }
  readFile(req: ReadFileRequest): Promise<ReadFileResponse> { return this.call('ReadFile', req); }
  resolvePath(req: ResolvePathRequest): Promise<ResolvePathResponse> { return this.call('ResolvePath', req); }
  createContainer(req: CreateContainerRequest): Promise<void> { return this.call('CreateContainer', req).then(() => undefined); }
  async startContainer(containerId: string): Promise<number> { return (await this.call('StartContainer', { containerId })).pid; }
  async execProcess(req: ExecProcessRequest): Promise<number> { return (await this.call('ExecProcess', req)).pid; }
  signalProcess(req: SignalProcessRequest): Promise<void> { return this.call('SignalProcess', req).then(() => undefined); }
  /** Waits for the process to exit, at most `timeoutMs` (no guest call waits without a deadline). */
  waitProcess(ref: ProcessRef, timeoutMs = this.options.callTimeoutMs): Promise<WaitProcessResponse> { return this.call('WaitProcess', ref, timeoutMs); }
  deleteContainer(req: DeleteContainerRequest): Promise<void> { return this.call('DeleteContainer', req).then(() => undefined); }
  listContainers(): Promise<ListContainersResponse> { return this.call('ListContainers', {}); }
  async writeStdin(ref: ProcessRef, data: Uint8Array): Promise<number> { return (await this.call('WriteStdin', { ...ref, data })).written; }
  closeStdin(ref: ProcessRef): Promise<void> { return this.call('CloseStdin', ref).then(() => undefined); }
  resizeTty(ref: ProcessRef, rows: number, cols: number): Promise<void> { return this.call('ResizeTty', { ...ref, rows, cols }).then(() => undefined); }
  containerStats(containerId: string): Promise<ContainerStatsResponse> { return this.call('ContainerStats', { containerId }); }
  sandboxStats(): Promise<ContainerStatsResponse> { return this.call('SandboxStats', {}); }
  updateContainerResources(req: UpdateContainerResourcesRequest): Promise<UpdateContainerResourcesResponse> { return this.call('UpdateContainerResources', req); }
  configureNetwork(req: ConfigureNetworkRequest): Promise<void> { return this.call('ConfigureNetwork', req).then(() => undefined); }
  pauseOutput(ref: ProcessRef, paused: boolean): Promise<void> { return this.call('PauseOutput', { ...ref, paused }).then(() => undefined); }
  writePort(connectionId: string, data: Uint8Array): Promise<void> { return this.call('WritePort', { connectionId, data }).then(() => undefined); }
  closePort(connectionId: string, writeOnly: boolean): Promise<void> { return this.call('ClosePort', { connectionId, writeOnly }).then(() => undefined); }
  pausePort(connectionId: string, paused: boolean): Promise<void> { return this.call('PausePort', { connectionId, paused }).then(() => undefined); }
  writeVolume(req: WriteVolumeRequest): Promise<void> { return this.call('WriteVolume', req).then(() => undefined); }
  readVolume(req: ReadVolumeRequest): Promise<ReadVolumeResponse> { return this.call('ReadVolume', req); }
  removeVolume(volumeId: string): Promise<void> { return this.call('RemoveVolume', { volumeId }).then(() => undefined); }
  /** Long poll: the call's own deadline is the wait plus a margin for a slow guest. */
  watchVolumes(req: WatchVolumesRequest): Promise<WatchVolumesResponse> { return this.call('WatchVolumes', req, req.waitMs + WATCH_VOLUMES_MARGIN_MS); }

  /**
   * Opens a TCP connection to `port` on the guest's loopback through the
   * agent. Resolves once connected; `ended` settles when the guest side has
   * finished sending (or the connection failed), after the last `onData`.
   */
  async dialPort(req: DialPortRequest, onData: (data: Uint8Array) => void): Promise<{ ended: Promise<void> }> {
    await this.ready();
    const portData = codec<PortData>('PortData');
    let connected!: () => void;
    const isConnected = new Promise<void>((resolve) => { connected = resolve; });
    let first = true;
    const ended = this.ttrpc!.stream(AGENT_SERVICE, 'DialPort', codec<DialPortRequest>('DialPortRequest').encode(req), (bytes) => {
      if (first) {
        first = false;
        connected();
        return;
      }
      onData(portData.decode(bytes).data);
    }).then(() => undefined);
    await Promise.race([isConnected, ended.then(() => { throw unavailable(`connection to port ${req.port} ended before it was established`); })]);
    return { ended };
  }
  /** Asks the guest to stop its containers and power off; the VM exits shortly after. */
  async shutdown(): Promise<void> {
    await this.call('Shutdown', {}, 30_000);
    // The guest is going away: do not try to reconnect to it.
    this.close();
  }

  /** The raw ttRPC client of the current connection (benchmarks and robustness tests). */
  async channel(): Promise<TtrpcClient> {
    await this.ready();
    return this.ttrpc!;
  }

  async call<M extends AgentMethod>(method: M, req: AgentApi[M][0], timeoutMs = this.options.callTimeoutMs): Promise<AgentApi[M][1]> {
    await this.ready();
    const { request, response } = this.codecs[method];
    // No call without a deadline: 0 or a negative value means the default.
    const deadline = timeoutMs > 0 ? timeoutMs : this.options.callTimeoutMs;
    const started = performance.now();
    const payload = await this.ttrpc!.call(AGENT_SERVICE, method, request.encode(req), { timeoutMs: deadline });
    callObserver?.(method, (performance.now() - started) / 1000);
    const limit = MAX_REPLY_BYTES[method] ?? DEFAULT_MAX_REPLY_BYTES;
    if (payload.length > limit) throw internal(`agent ${method}: reply of ${payload.length} bytes is over the ${limit}-byte limit for this call`);
    const maxFields = MAX_REPLY_FIELDS[method];
    if (maxFields !== undefined) {
      let fields: number;
      try {
        fields = response.countFields(payload, maxFields);
      } catch (err) {
        throw internal(`agent ${method}: undecodable reply: ${capMessage(messageOf(err))}`);
      }
      if (fields > maxFields) {
        throw internal(`agent ${method}: reply holds more than ${maxFields} fields, more than any answer of this call; not decoded (the pod's guest may be compromised)`);
      }
    }
    try {
      return response.decode(payload);
    } catch (err) {
      throw internal(`agent ${method}: undecodable reply: ${capMessage(messageOf(err))}`);
    }
  }

  /** Stops reading the guest's channel (log backpressure); replies wait too, but never past their deadline. */
  pause(): void {
    this.ttrpc?.pause();
  }

  resume(): void {
    this.ttrpc?.resume();
  }

  private async ready(): Promise<void> {
    if (this.protocolFailure) throw unavailable(`agent channel ${this.socketPath} was closed: ${this.protocolFailure}`);
    if (this.closedByUser) throw unavailable(`agent client for ${this.socketPath} is closed`);
    if (this.connected) return;
    await (this.connecting ?? this.establish());
  }

  private establish(): Promise<void> {
    this.connecting ??= this.connectLoop().finally(() => { this.connecting = undefined; });
    return this.connecting;
  }

  private async connectLoop(): Promise<void> {
    const deadline = Date.now() + this.options.deadlineMs;
    let lastError = 'no attempt made';
    let attempts = 0;
    while (!this.closedByUser && !this.protocolFailure) {
      if (Date.now() > deadline) {
        throw deadlineExceeded(`the agent at ${this.socketPath} did not answer within ${this.options.deadlineMs} ms after ${attempts} attempts (last: ${lastError})`);
      }
      attempts++;
      let ttrpc: TtrpcClient | undefined;
      try {
        const socket = await openSocket(this.socketPath);
        // A fresh session per connection: the guest may not have seen the previous one end.
        ttrpc = new TtrpcClient(socket, { session: randomUUID(), streamIds: this.streamIds });
        // Until the guest opens its end, what we send is dropped: probe until Health answers.
        // A fixed short probe never succeeds once the guest answers more slowly than
        // it (TCG on a loaded host): every answer would arrive for a call already given
        // up. So each miss doubles the wait, and a slow guest is still found.
        let health: HealthResponse;
        let probeMs = this.options.probeTimeoutMs;
        for (;;) {
          const probe = ttrpc.call(AGENT_SERVICE, 'Health', this.codecs.Health.request.encode({}), { timeoutMs: probeMs });
          try {
            // undefined: the port opened before this probe was answered.
            const answer = await (this.portOpened ? Promise.race([probe, this.portOpened.then(() => undefined)]) : probe);
            if (answer === undefined) {
              // The guest just opened the port: this probe may have gone before; send a fresh one now.
              this.portOpened = undefined;
              probe.catch(() => undefined);
              probeMs = this.options.probeTimeoutMs;
              continue;
            }
            health = this.codecs.Health.response.decode(answer);
            break;
          } catch (err) {
            if (!isPodvisorError(err, 'DEADLINE_EXCEEDED') || Date.now() > deadline) throw err;
            probeMs = Math.min(probeMs * 2, MAX_PROBE_TIMEOUT_MS);
          }
        }
        // A restarted agent numbers its events from 1 again.
        if (this.agentStarts !== undefined && health.starts !== this.agentStarts) this.lastSequence = 0;
        this.agentStarts = health.starts;
        this.adopt(ttrpc);
        return;
      } catch (err) {
        lastError = messageOf(err);
        ttrpc?.close();
        await sleep(50);
      }
    }
    throw unavailable(`agent client for ${this.socketPath} is closed`);
  }

  private adopt(ttrpc: TtrpcClient): void {
    const wasConnected = this.ttrpc !== undefined;
    this.ttrpc = ttrpc;
    const events = eventCodec();
    // The agent re-sends what it still holds after the last event we got: what
    // was in flight when a connection went away.
    ttrpc
      .stream(AGENT_SERVICE, 'GetEvents', getEventsRequestCodec().encode({ afterSequence: this.lastSequence }), (bytes) => {
        const event = events.decode(bytes);
        if (event.sequence <= this.lastSequence) return; // already delivered
        if (this.lastSequence && event.sequence > this.lastSequence + 1) this.droppedEvents += event.sequence - this.lastSequence - 1;
        this.lastSequence = event.sequence;
        if (event.output) this.emit('output', event.output);
        else if (event.exit) this.emit('exit', event.exit);
        else if (event.log) this.emit('log', event.log);
      })
      .catch(() => undefined); // ends with the connection; handled by 'close'
    ttrpc.once('protocolError', (reason) => {
      if (this.ttrpc !== ttrpc || this.closedByUser) return;
      // Logged once here; the channel is not reopened, so this cannot repeat.
      this.protocolFailure = reason;
      log.warn({ socket: this.socketPath, reason }, 'the guest broke the agent protocol; closing its channel for good');
      this.emit('protocolError', reason);
      this.emit('gone', reason);
    });
    ttrpc.once('close', (reason) => {
      if (this.ttrpc !== ttrpc || this.closedByUser || this.protocolFailure) return;
      this.warnDrop(reason);
      this.emit('disconnect', reason);
      this.establish().catch((err) => {
        log.error({ socket: this.socketPath, err: messageOf(err) }, 'agent reconnect failed');
        this.emit('gone', `the agent channel dropped and did not come back: ${messageOf(err)}`);
      });
    });
    if (wasConnected) this.emit('reconnect');
  }

  private warnDrop(reason: string): void {
    const now = Date.now();
    if (now - this.lastDropWarnAt < DROP_WARN_INTERVAL_MS) {
      this.dropsSinceWarn++;
      log.debug({ socket: this.socketPath, reason }, 'agent channel dropped again; reconnecting');
      return;
    }
    log.warn({ socket: this.socketPath, reason, dropsSinceLastWarning: this.dropsSinceWarn }, 'agent channel dropped; reconnecting');
    this.lastDropWarnAt = now;
    this.dropsSinceWarn = 0;
  }
}

function openSocket(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', reject);
  });
}
