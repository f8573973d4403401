import { EventEmitter } from 'node:events';
import { chmodSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { failedPrecondition, internal, invalidArgument, isPodvisorError, messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { removeVmCgroupSoon } from './cgroup.js';
import { reclaimIdentity, type QemuIdentity, type QemuUsers } from './confinement.js';
import { ConsoleLog } from './console-log.js';
import { withDeadline } from './deadline.js';
import type { DiskAddress, DiskSet, HotplugDiskRequest } from './disks.js';
import { isFatalRunState, watchFatalStop } from './fatal-stop.js';
import { isProcessAlive } from './proc.js';
import { QmpClient } from './qmp-client.js';
import type { QmpEvent, RunState } from './qmp-types.js';
import { consoleTail, removeRunFiles, tail, type RunDirPaths } from './run-dir.js';
import { classifyExit, type VmExitInfo } from './vm-exit.js';

/**
 * A running pod VM as podvisor drives it over its own QMP monitor, whoever started its QEMU
 * (podvisor's launcher, src/vm/vm.ts, or libvirt, src/vm/libvirt/libvirt-vm.ts). This part
 * owns what both backends do alike: the QMP client, the hot-plugged disks, the console log,
 * the VM's state and exit, watching for its end, and the stop phases around the one step
 * that is each backend's own (how it ends QEMU).
 */

export type VmState = 'running' | 'stopping' | 'exited' | 'detached';

export interface VmStopOptions {
  /** Asks the guest to shut down (the agent's Shutdown RPC); QEMU should then exit by itself. */
  graceful?: () => Promise<void>;
  /** Deadline of each phase: graceful hook + wait for exit, the backend's way to end QEMU, SIGKILL. */
  timeoutMs?: number;
}

export interface VmEvents {
  exit: [VmExitInfo];
}

/** The parts a backend has made by the time it constructs its VM (launch or reattach). */
export interface QmpVmParts {
  id: string;
  pid: number;
  /** The QEMU process's start time (/proc stat), so a recycled pid is never taken for it. */
  startTime: string;
  accel: 'kvm' | 'tcg';
  paths: RunDirPaths;
  qmp: QmpClient;
  diskSet: DiskSet;
  console?: ConsoleLog;
  log: Logger;
  /** The uid QEMU runs as, from `users` (undefined: root); released when QEMU is gone. */
  uid?: number;
  users?: QemuUsers;
  /** Cgroup directories podvisor made for the VM's limits; removed when QEMU is gone. */
  cgroups?: string[];
}

export const DEFAULT_CONSOLE_MAX_BYTES = 2 * 1024 * 1024;
const PROCESS_POLL_MS = 250;
/** How long a launch that failed waits to learn whether QEMU ended (for QEMU's own words in the error). */
const EXIT_NOTICE_MS = 400;
/** How long the readiness hook's failure gives the VM to stop. */
const READY_FAILURE_STOP_MS = 5000;

export abstract class QmpVm extends EventEmitter<VmEvents> {
  readonly id: string;
  readonly paths: RunDirPaths;
  readonly pid: number;
  readonly accel: 'kvm' | 'tcg';
  protected readonly startTime: string;
  protected readonly log: Logger;
  protected readonly qmpClient: QmpClient;
  protected readonly diskSet: DiskSet;
  protected readonly console?: ConsoleLog;
  protected vmState: VmState = 'running';
  protected exitInfo?: VmExitInfo;
  protected stopPromise?: Promise<VmExitInfo>;
  private lastShutdown?: QmpEvent<'SHUTDOWN'>;
  private panicked = false;
  private fatalStatus?: RunState;
  private pollTimer?: NodeJS.Timeout;
  private readonly confinement: Pick<QmpVmParts, 'uid' | 'users' | 'cgroups'>;

  /** What the backend's own way to end QEMU does, for log lines ("quitting QEMU"). */
  protected abstract readonly endingQemu: string;
  /** Each stop phase's deadline when QEMU paused the VM on an error and podvisor ends it. */
  protected abstract readonly fatalStopPhaseMs: number;

  protected constructor(parts: QmpVmParts) {
    super();
    this.id = parts.id;
    this.pid = parts.pid;
    this.startTime = parts.startTime;
    this.accel = parts.accel;
    this.paths = parts.paths;
    this.qmpClient = parts.qmp;
    this.diskSet = parts.diskSet;
    this.console = parts.console;
    this.log = parts.log;
    this.confinement = { uid: parts.uid, users: parts.users, cgroups: parts.cgroups };
    this.watch();
  }

  get state(): VmState {
    return this.vmState;
  }

  /** The typed QMP connection, for commands the VM methods do not wrap. */
  get qmp(): QmpClient {
    return this.qmpClient;
  }

  /** Where the host side of the agent's virtio-serial port listens. */
  get agentSocket(): string {
    return this.paths.agentSocket;
  }

  get exited(): VmExitInfo | undefined {
    return this.exitInfo;
  }

  /** The uid QEMU runs as (undefined: root, an unconfined VM). */
  get uid(): number | undefined {
    return this.confinement.uid;
  }

  /** The VM's cgroup directories (empty when it has no limits). */
  get cgroups(): string[] {
    return this.confinement.cgroups ?? [];
  }

  // ---------------------------------------------------------------- backend's own parts

  /** Asks QEMU to end the backend's own way, within `phaseMs`; the stop then waits for the process to go. */
  protected abstract endQemu(phaseMs: number): Promise<void>;

  /** How the QEMU process went, for the exit's detail ("killed by SIGKILL", "process gone"). */
  protected abstract howQemuEnded(stoppedByPodvisor: boolean): string;

  /** Releases what the backend holds for the VM once its QEMU is gone (run files, records); the uid and cgroups go after it. */
  protected abstract releaseAfterExit(): void;

  /** The QEMU process, in error messages ("QEMU pid 42"). */
  protected describeQemu(): string {
    return `QEMU pid ${this.pid}`;
  }

  /** Whether the QEMU process still runs. */
  protected qemuAlive(): boolean {
    return isProcessAlive(this.pid, this.startTime);
  }

  /** True when QEMU is gone but its exit is not to be recorded yet (e.g. the exit status is a moment away). */
  protected exitPending(): boolean {
    return false;
  }

  /** Extra exit facts only the backend knows (a child's exit code and signal). */
  protected exitStatus(): Pick<VmExitInfo, 'exitCode' | 'signal'> {
    return {};
  }

  /** Runs once a stop has seen QEMU go, before it resolves (e.g. until libvirt forgets the domain). */
  protected async afterStopped(_phaseMs: number): Promise<void> {}

  /** Every poll tick while the VM runs. */
  protected poll(): void {
    this.checkAlive();
  }

  // ---------------------------------------------------------------- launch and reattach

  /**
   * The end of a launch: `start` (the backend's steps that get the guest running, if any),
   * then the readiness hook. On any failure the VM is stopped and its run files removed; when
   * QEMU ended by itself the error says so in QEMU's own words.
   */
  protected async finishLaunch(
    waitReady: ((vm: this, deadline: number) => Promise<void>) | undefined,
    opts: { start?: () => Promise<void>; readyTimeoutMs?: number; removeDir: boolean },
  ): Promise<void> {
    try {
      await opts.start?.();
      if (waitReady) await this.runReadyHook(waitReady, opts.readyTimeoutMs ?? 60_000);
    } catch (e) {
      // A QMP error here is most often QEMU dying under it: say that, in QEMU's words.
      const ended = this.exitInfo ?? (await Promise.race([this.waitExit(), sleep(EXIT_NOTICE_MS).then(() => undefined)]));
      await this.stop({ timeoutMs: READY_FAILURE_STOP_MS }).catch(() => undefined);
      removeRunFiles(this.paths, { keepLogs: false, removeDir: opts.removeDir });
      if (ended && ended.reason !== 'stopped' && !isPodvisorError(e, 'FAILED_PRECONDITION')) throw this.endedBeforeReady(ended, e);
      throw e;
    }
  }

  private endedBeforeReady(info: VmExitInfo, cause?: unknown): Error {
    return failedPrecondition(`VM ${this.id} ended before it was ready: ${info.detail}`, cause);
  }

  /**
   * Runs the readiness hook against the VM's end: QEMU exiting, or pausing itself on an error,
   * fails the launch at once with QEMU's own words instead of waiting out the deadline.
   */
  private async runReadyHook(hook: (vm: this, deadline: number) => Promise<void>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const ended = this.waitExit().then((info) => {
      throw this.endedBeforeReady(info);
    });
    ended.catch(() => undefined);
    try {
      await withDeadline(Promise.race([hook(this, deadline), ended]), timeoutMs, `VM ${this.id} was not ready within ${timeoutMs} ms`);
    } catch (e) {
      this.log.warn({ err: messageOf(e), console: consoleTail(this.paths, 2000) }, 'VM did not become ready; stopping it');
      await this.stop({ timeoutMs: READY_FAILURE_STOP_MS }).catch(() => undefined);
      throw e;
    }
  }

  /**
   * The end of a reattach, alike for both backends: builds the VM on the monitors
   * `reconnectMonitors` gave (the uid its record names marked taken again), matches its disk
   * list with QEMU's, and ends a VM QEMU paused on an error while nobody watched.
   *
   * A failure at any step lets go of everything the attempt holds (the poll timer, QMP and what
   * waits on it, the console, the uid reservation) and leaves QEMU itself running: the caller
   * (src/pod/recovery.ts) then ends it with the backend's `killLeftover`, which also removes its
   * cgroups, or finds it gone. The uid goes back at once because recovery runs before the CRI
   * socket is served: no launch can be handed it before that QEMU is ended.
   */
  protected static async adopt<V extends QmpVm>(
    monitors: { qmp: QmpClient; console?: ConsoleLog },
    identity: { record: { uid?: number; gid?: number }; users?: QemuUsers },
    build: (runAs: QemuIdentity | undefined) => V,
    message: string,
    fields: Record<string, unknown> = {},
  ): Promise<V> {
    let runAs: QemuIdentity | undefined;
    let vm: V;
    try {
      runAs = reclaimIdentity(identity.record, identity.users);
      vm = build(runAs);
    } catch (e) {
      monitors.qmp.close();
      monitors.console?.close();
      if (runAs) identity.users?.release(runAs.uid);
      throw e;
    }
    try {
      await vm.diskSet.reconcile(vm.qmpClient, 10_000);
      const status = await vm.qmpClient.execute('query-status');
      vm.log.info({ status: status.status, ...fields, disks: vm.diskSet.list().length }, message);
      if (isFatalRunState(status.status)) vm.onFatalStop(status.status);
    } catch (e) {
      await vm.abandonReattach(e);
      throw e;
    }
    return vm;
  }

  /**
   * A reattach that failed once the VM object existed: what it holds is let go, QEMU is not
   * touched. A stop already under way (QEMU paused itself on an error meanwhile) is let finish,
   * bounded by its own phases: it releases everything itself when QEMU is gone.
   */
  private async abandonReattach(cause: unknown): Promise<void> {
    this.log.warn({ err: messageOf(cause) }, 'reattach failed; letting go of the VM (QEMU left running for the caller to end)');
    if (this.stopPromise) await this.stopPromise.catch(() => undefined);
    if (this.exitInfo) return;
    this.letGo();
    if (this.uid !== undefined) this.confinement.users?.release(this.uid);
  }

  // ---------------------------------------------------------------- state

  async status(): Promise<RunState> {
    return (await this.qmpClient.execute('query-status')).status;
  }

  /** Resolves when QEMU is gone (at once if it already is). */
  waitExit(): Promise<VmExitInfo> {
    if (this.exitInfo) return Promise.resolve(this.exitInfo);
    return new Promise((resolve) => this.once('exit', resolve));
  }

  private watch(): void {
    this.qmpClient.on('event', (ev) => {
      // libvirt runs QEMU with -no-shutdown: a guest power-off pauses QEMU, and libvirt then ends it
      // with a signal, a second SHUTDOWN (host-signal). The guest's own event says why the VM ended.
      if (ev.event === 'SHUTDOWN' && !this.lastShutdown?.data.guest) this.lastShutdown = ev as QmpEvent<'SHUTDOWN'>;
      if (ev.event === 'GUEST_PANICKED') this.panicked = true;
      if (ev.event === 'SHUTDOWN' || ev.event === 'GUEST_PANICKED' || ev.event === 'STOP' || ev.event === 'RESUME') {
        this.log.info({ event: ev.event, data: ev.data }, 'VM event');
      }
    });
    watchFatalStop(this.qmpClient, (status) => this.onFatalStop(status));
    // The socket closes when QEMU dies: check at once rather than at the next poll.
    this.qmpClient.on('close', () => this.checkAlive());
    this.pollTimer = setInterval(() => this.poll(), PROCESS_POLL_MS);
    this.pollTimer.unref();
  }

  /**
   * QEMU paused the VM on an error the guest cannot continue from. Ending the VM at once is
   * what lets a boot fail in seconds and a running sandbox turn NOTREADY; a paused QEMU would
   * otherwise hold its memory until someone noticed.
   */
  private onFatalStop(status: RunState): void {
    if (this.fatalStatus || this.exitInfo || this.stopPromise) return;
    this.fatalStatus = status;
    this.log.warn({ status, qemu: tail(this.paths.qemuLog, 600) }, `QEMU paused the VM on an error; ${this.endingQemu}`);
    this.stopPromise = this.doStop({ timeoutMs: this.fatalStopPhaseMs });
    this.stopPromise.catch((e) => this.log.error({ err: messageOf(e) }, 'ending the paused VM failed'));
  }

  protected checkAlive(): void {
    if (this.exitInfo || this.vmState === 'detached') return;
    if (this.qemuAlive() || this.exitPending()) return;
    this.onGone();
  }

  protected onGone(): void {
    if (this.exitInfo) return;
    clearInterval(this.pollTimer);
    this.vmState = 'exited';
    const stoppedByPodvisor = this.stopPromise !== undefined;
    const facts = {
      fatalStatus: this.fatalStatus, panicked: this.panicked, shutdown: this.lastShutdown?.data.reason,
      stoppedByPodvisor, how: this.howQemuEnded(stoppedByPodvisor),
    };
    this.exitInfo = { ...classifyExit(facts, this.paths), at: new Date(), ...this.exitStatus() };
    this.qmpClient.close();
    this.console?.close();
    this.releaseAfterExit();
    removeVmCgroupSoon(this.cgroups);
    if (this.uid !== undefined) this.confinement.users?.release(this.uid);
    this.log.info({ reason: this.exitInfo.reason, detail: this.exitInfo.detail }, 'QEMU exited');
    this.emit('exit', this.exitInfo);
  }

  // ---------------------------------------------------------------- stop

  /**
   * Stops the VM: the graceful hook, then the backend's own way to end QEMU, then SIGKILL, each
   * with its deadline. Idempotent; removes sockets and pidfile and keeps the logs.
   */
  stop(opts: VmStopOptions = {}): Promise<VmExitInfo> {
    if (this.vmState === 'detached') return Promise.reject(failedPrecondition(`VM ${this.id} was detached; reattach to stop it`));
    this.stopPromise ??= this.doStop(opts);
    return this.stopPromise;
  }

  private async doStop(opts: VmStopOptions): Promise<VmExitInfo> {
    const phaseMs = opts.timeoutMs ?? 10_000;
    if (!this.exitInfo) this.vmState = 'stopping';
    if (opts.graceful && !this.exitInfo) {
      try {
        await withDeadline(opts.graceful(), phaseMs, `graceful shutdown hook took over ${phaseMs} ms`);
        await this.waitGone(phaseMs);
      } catch (e) {
        this.log.warn({ err: messageOf(e) }, `graceful stop failed; ${this.endingQemu}`);
      }
    }
    if (!this.exitInfo) {
      await this.endQemu(phaseMs);
      await this.waitGone(phaseMs);
    }
    if (!this.exitInfo) {
      this.log.warn({ after: this.endingQemu }, 'QEMU still running; sending SIGKILL');
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw internal(`cannot kill QEMU pid ${this.pid}: ${messageOf(e)}`, e);
      }
      await this.waitGone(phaseMs);
    }
    if (!this.exitInfo) throw internal(`${this.describeQemu()} survived SIGKILL for ${phaseMs} ms`);
    await this.afterStopped(phaseMs);
    return this.exitInfo;
  }

  /** QMP `quit`, within `phaseMs`; a failure is logged (the stop goes on to SIGKILL). */
  protected async quitOverQmp(phaseMs: number): Promise<void> {
    try {
      await this.qmpClient.execute('quit', undefined, { timeoutMs: phaseMs });
    } catch (e) {
      this.log.warn({ err: messageOf(e) }, 'QMP quit failed');
    }
  }

  private async waitGone(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.exitInfo && Date.now() < deadline) {
      this.checkAlive();
      if (this.exitInfo) return;
      await sleep(25);
    }
  }

  /**
   * Lets go of a running VM without touching it (podvisord shutting down): closes QMP and
   * stops watching. The backend's `reattach` picks it up again.
   */
  detach(): void {
    if (this.vmState !== 'running') return;
    this.letGo();
  }

  /**
   * Stops watching QEMU and closes what the VM holds of it, leaving QEMU running. QMP closes
   * before its listeners go, so commands and event waiters still pending settle (their timers
   * with them) instead of running out their deadlines.
   */
  private letGo(): void {
    this.vmState = 'detached';
    clearInterval(this.pollTimer);
    this.qmpClient.close();
    this.qmpClient.removeAllListeners();
    // QEMU drops console output while nobody reads; the next daemon reconnects (reattach).
    this.console?.close();
  }

  /** Stops the VM if needed and removes its whole run directory, logs included. */
  async destroy(opts: VmStopOptions = {}): Promise<void> {
    await this.stop(opts);
    removeRunFiles(this.paths, { keepLogs: false, removeDir: true });
  }

  // ---------------------------------------------------------------- disks

  /** Hot-plugs a disk image as a SCSI disk; the result tells the agent how to find it. */
  async hotplugDisk(req: HotplugDiskRequest): Promise<DiskAddress> {
    this.assertRunning('hot-plug a disk');
    return this.diskSet.plug(this.qmpClient, req);
  }

  /** Unplugs a disk and waits until QEMU has released it (DEVICE_DELETED). */
  async unplugDisk(id: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    this.assertRunning('unplug a disk');
    return this.diskSet.unplug(this.qmpClient, id, opts.timeoutMs ?? 10_000);
  }

  disks(): DiskAddress[] {
    return this.diskSet.list();
  }

  protected assertRunning(what: string): void {
    if (this.vmState !== 'running') throw failedPrecondition(`cannot ${what}: VM ${this.id} is ${this.vmState}`);
  }
}

/**
 * Reconnects to a running VM's QMP monitor and console (a reattach). A console that cannot
 * be reached only loses its output; QMP is required.
 */
export async function reconnectMonitors(
  paths: RunDirPaths, opts: { consoleMaxBytes: number; timeoutMs?: number; log: Logger },
): Promise<{ qmp: QmpClient; console?: ConsoleLog }> {
  const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: opts.timeoutMs ?? 10_000 });
  try {
    return { qmp, console: await ConsoleLog.connect(paths.consoleSocket, paths.consoleLog, paths.consoleLogOld, opts.consoleMaxBytes) };
  } catch (e) {
    opts.log.warn({ err: messageOf(e) }, 'cannot reconnect to the console; its output is dropped');
    return { qmp };
  }
}

const VM_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** What every backend's launch checks first: the id names the VM's process, domain and run directory. */
export function checkVmId(id: string): void {
  if (!VM_ID_PATTERN.test(id)) {
    throw invalidArgument(`VM id ${JSON.stringify(id)} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
}

/** Said once per launch under TCG, whatever the backend: operators must not mistake it for isolation. */
export function warnIfEmulated(accel: 'kvm' | 'tcg', log: Logger): void {
  if (accel === 'tcg') log.warn('this pod VM runs under TCG emulation, which is not a security boundary: do not run untrusted pods on this node');
}

/**
 * A freshly started QEMU's sockets are root's alone (0600) before podvisor connects its console
 * reader, which keeps the serial output on the host from then on.
 */
export async function lockSocketsAndOpenConsole(paths: RunDirPaths, consoleMaxBytes: number): Promise<ConsoleLog> {
  for (const sock of [paths.qmpSocket, paths.agentSocket, paths.consoleSocket]) chmodSync(sock, 0o600);
  return ConsoleLog.connect(paths.consoleSocket, paths.consoleLog, paths.consoleLogOld, consoleMaxBytes);
}
