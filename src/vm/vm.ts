import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { accessSync, chmodSync, closeSync, constants, openSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { failedPrecondition, internal, invalidArgument, isPodvisorError, messageOf, notFound } from '../errors.js';
import { logger, type Logger } from '../log.js';
import { readJsonFile, writeJsonAtomicSync } from '../util/atomic-file.js';
import { withDeadline } from './deadline.js';
import { DiskSet, type DiskAddress, type HotplugDiskRequest } from './disks.js';
import { hostTscKhz, qemuHasSandbox, resolveAccel } from './host.js';
import { isProcessAlive, readProcStat } from './proc.js';
import { DEFAULT_QEMU_BINARY, validateProfile, type VmProfile } from './profile.js';
import { buildQemuArgs, type SharedFs, type TapDevice } from './qemu-args.js';
import { QmpClient } from './qmp-client.js';
import type { QmpEvent, RunState } from './qmp-types.js';
import { looksLikeOurQemu, prepareRunDir, readPidFile, removeRunFiles, runDirPaths, tail, type RunDirPaths } from './run-dir.js';

/**
 * One QEMU process per sandbox. QEMU runs in its own session, detached from podvisord, so
 * the daemon can exit and come back (`Vm.reattach`) without touching running VMs.
 */

export interface VmLaunchOptions {
  /** Sandbox id; shows in `-name` and the process name so operators can find the VM. */
  id: string;
  profile: VmProfile;
  /** Per-sandbox host directory for sockets, pidfile and logs (created 0700). */
  runDir: string;
  /**
   * Run QEMU inside this network namespace: a name under /run/netns (`ip netns exec`) or the
   * absolute path of a namespace file, e.g. a CNI-made one (`nsenter --net=`).
   */
  netns?: string;
  tap?: TapDevice;
  /** A virtio-fs share (volumes); its virtiofsd must already listen on the socket. */
  sharedFs?: SharedFs;
  /** Start paused waiting for `migrate-incoming` (restoring a VM template). */
  incomingDefer?: boolean;
  /** How long QEMU may take to answer QMP. */
  startTimeoutMs?: number;
  /** Called once QMP answers, e.g. the agent client's readiness check; failure stops the VM. */
  waitReady?: (vm: Vm, deadline: number) => Promise<void>;
  readyTimeoutMs?: number;
}

export type VmExitReason =
  /** podvisor stopped it. */
  | 'stopped'
  /** The guest powered off. */
  | 'guest-shutdown'
  /** The guest rebooted; with -no-reboot that ends the VM. */
  | 'guest-reboot'
  /** Kernel panic (pvpanic event or the panic on the console). */
  | 'guest-panic'
  /** QEMU ended on a signal or error nobody asked for (e.g. `kill -9`, OOM killer). */
  | 'crashed';

export interface VmExitInfo {
  reason: VmExitReason;
  detail: string;
  at: Date;
  /** Only known when QEMU is podvisord's own child (not after a reattach). */
  exitCode?: number | null;
  signal?: NodeJS.Signals | null;
}

export interface VmStopOptions {
  /** Asks the guest to shut down (the agent's Shutdown RPC); QEMU should then exit by itself. */
  graceful?: () => Promise<void>;
  /** Deadline of each phase: graceful hook + wait for exit, QMP quit, SIGKILL. */
  timeoutMs?: number;
}

export type VmState = 'running' | 'stopping' | 'exited' | 'detached';

/** What the launcher records so that a later daemon can recognise its QEMU. */
interface VmRecord {
  id: string;
  pid: number;
  startTime: string;
  qemuBinary: string;
  accel: 'kvm' | 'tcg';
  launchedAt: string;
}

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const PROCESS_POLL_MS = 250;
const CHILD_EXIT_GRACE_MS = 200;

export interface VmEvents {
  exit: [VmExitInfo];
}

export class Vm extends EventEmitter<VmEvents> {
  readonly id: string;
  readonly paths: RunDirPaths;
  readonly pid: number;
  readonly accel: 'kvm' | 'tcg';
  private readonly startTime: string;
  private readonly log: Logger;
  private readonly diskSet: DiskSet;
  private readonly qmpClient: QmpClient;
  private vmState: VmState = 'running';
  private exitInfo?: VmExitInfo;
  private stopPromise?: Promise<VmExitInfo>;
  private lastShutdown?: QmpEvent<'SHUTDOWN'>;
  private panicked = false;
  private pollTimer?: NodeJS.Timeout;
  private child?: ChildProcess;
  private childExit?: { code: number | null; signal: NodeJS.Signals | null };
  private childGrace?: NodeJS.Timeout;

  private constructor(record: VmRecord, paths: RunDirPaths, qmp: QmpClient, diskSet: DiskSet, child?: ChildProcess) {
    super();
    this.id = record.id;
    this.pid = record.pid;
    this.startTime = record.startTime;
    this.accel = record.accel;
    this.paths = paths;
    this.qmpClient = qmp;
    this.diskSet = diskSet;
    this.child = child;
    this.log = logger('vm', { sandbox: record.id, pid: record.pid });
    this.watch();
  }

  get state(): VmState {
    return this.vmState;
  }

  /** The typed QMP connection, for commands the Vm methods do not wrap. */
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

  // ---------------------------------------------------------------- launch

  static async launch(opts: VmLaunchOptions): Promise<Vm> {
    if (!ID_PATTERN.test(opts.id)) {
      throw invalidArgument(`VM id ${JSON.stringify(opts.id)} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`);
    }
    validateProfile(opts.profile);
    checkReadable('kernel', opts.profile.kernel);
    if (opts.profile.initrd) checkReadable('initrd', opts.profile.initrd);
    if (opts.profile.systemDisk) checkReadable('system disk', opts.profile.systemDisk);
    if (opts.netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(opts.netns) && !/^\/[^\0\n]+$/.test(opts.netns)) {
      throw invalidArgument(`network namespace ${JSON.stringify(opts.netns)} is neither a name nor an absolute path`);
    }
    if (opts.sharedFs && !/^[A-Za-z0-9_.-]{1,36}$/.test(opts.sharedFs.tag)) {
      throw invalidArgument(`virtio-fs tag ${JSON.stringify(opts.sharedFs.tag)} must be 1-36 letters, digits, '.', '_' or '-'`);
    }
    const paths = runDirPaths(opts.runDir);
    const accel = await resolveAccel(opts.profile.accel);
    const tscKhz = opts.profile.tscKhz ?? hostTscKhz();
    const qemuBinary = opts.profile.qemuBinary ?? DEFAULT_QEMU_BINARY;

    const qemuArgs = buildQemuArgs({
      id: opts.id, profile: opts.profile, paths, accel, tscKhz,
      sandbox: qemuHasSandbox(qemuBinary), tap: opts.tap, sharedFs: opts.sharedFs, incomingDefer: opts.incomingDefer,
    });
    const createdDir = prepareRunDir(paths);
    const [command, args] = inNetns(opts.netns, qemuBinary, qemuArgs);
    const log = logger('vm', { sandbox: opts.id });
    if (accel === 'tcg') log.warn('this pod VM runs under TCG emulation, which is not a security boundary: do not run untrusted pods on this node');
    log.info({ accel, machine: opts.profile.machine, vcpus: opts.profile.vcpus, memoryMiB: opts.profile.memoryMiB, netns: opts.netns }, 'launching QEMU');
    log.debug({ command, args }, 'QEMU command line');

    const out = openSync(paths.qemuLog, 'a', 0o600);
    let child: ChildProcess;
    try {
      // Own session (setsid) and unref: QEMU outlives podvisord and gets none of its signals.
      child = spawn(command, args, { detached: true, stdio: ['ignore', out, out] });
    } finally {
      closeSync(out);
    }
    child.unref();

    const exited = new AbortController();
    let childExit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let spawnError: Error | undefined;
    child.once('error', (e) => {
      spawnError = e;
      exited.abort();
    });
    child.once('exit', (code, signal) => {
      childExit = { code, signal };
      exited.abort();
    });

    let qmp: QmpClient | undefined;
    let vm: Vm;
    try {
      qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: opts.startTimeoutMs ?? 30_000, signal: exited.signal });
      const pid = readPidFile(paths.pidFile) ?? child.pid;
      const stat = pid === undefined ? undefined : readProcStat(pid);
      if (pid === undefined || !stat) throw internal(`QEMU answered QMP but its pid is unknown (${paths.pidFile})`);
      for (const s of [paths.qmpSocket, paths.agentSocket]) chmodSync(s, 0o600);
      const record: VmRecord = {
        id: opts.id, pid, startTime: stat.startTime, qemuBinary, accel, launchedAt: new Date().toISOString(),
      };
      const status = await qmp.execute('query-status');
      writeJsonAtomicSync(paths.stateFile, record);
      vm = new Vm(record, paths, qmp, DiskSet.create(paths.disksFile), child);
      if (childExit) vm.childExit = childExit;
      vm.log.info({ status: status.status }, 'QEMU is up');
    } catch (e) {
      qmp?.close();
      await killChild(child, childExit);
      const why = spawnError
        ? `cannot run ${command}: ${messageOf(spawnError)}`
        : childExit
          ? `QEMU exited during start-up (${describeExit(childExit)}): ${tail(paths.qemuLog) || 'no output'}`
          : messageOf(e);
      removeRunFiles(paths, { keepLogs: false, removeDir: createdDir });
      log.warn({ err: why }, 'VM launch failed');
      if (isPodvisorError(e) && !spawnError && !childExit) throw e;
      throw failedPrecondition(`VM ${opts.id} failed to start: ${why}`, e);
    }
    if (opts.waitReady) {
      try {
        await vm.runReadyHook(opts.waitReady, opts.readyTimeoutMs ?? 60_000);
      } catch (e) {
        removeRunFiles(paths, { keepLogs: false, removeDir: createdDir });
        throw e;
      }
    }
    return vm;
  }

  private async runReadyHook(hook: NonNullable<VmLaunchOptions['waitReady']>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    try {
      await withDeadline(hook(this, deadline), timeoutMs, `VM ${this.id} was not ready within ${timeoutMs} ms`);
    } catch (e) {
      this.log.warn({ err: messageOf(e), console: tail(this.paths.consoleLog, 2000) }, 'VM did not become ready; stopping it');
      await this.stop({ timeoutMs: 5000 });
      throw e;
    }
  }

  // ---------------------------------------------------------------- reattach

  /** Finds a VM launched by an earlier podvisord from its run directory. */
  static async reattach(runDir: string, opts: { timeoutMs?: number } = {}): Promise<Vm> {
    const paths = runDirPaths(runDir);
    const record = readJsonFile<VmRecord>(paths.stateFile);
    const pid = readPidFile(paths.pidFile) ?? record?.pid;
    if (!record || pid === undefined) {
      removeRunFiles(paths, { keepLogs: true, removeDir: false });
      throw notFound(`no running VM in ${runDir} (no ${basename(paths.stateFile)} or pidfile)`);
    }
    if (!isProcessAlive(pid, record.startTime) || !looksLikeOurQemu(pid, paths)) {
      removeRunFiles(paths, { keepLogs: true, removeDir: false });
      throw notFound(`VM ${record.id} is not running: QEMU pid ${pid} is gone`);
    }
    const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: opts.timeoutMs ?? 10_000 });
    const vm = new Vm({ ...record, pid }, paths, qmp, DiskSet.load(paths.disksFile));
    await vm.diskSet.reconcile(qmp, 10_000);
    const status = await qmp.execute('query-status');
    vm.log.info({ status: status.status, disks: vm.diskSet.list().length }, 'reattached to running VM');
    return vm;
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
      if (ev.event === 'SHUTDOWN') this.lastShutdown = ev as QmpEvent<'SHUTDOWN'>;
      if (ev.event === 'GUEST_PANICKED') this.panicked = true;
      if (ev.event === 'SHUTDOWN' || ev.event === 'GUEST_PANICKED' || ev.event === 'STOP' || ev.event === 'RESUME') {
        this.log.info({ event: ev.event, data: ev.data }, 'VM event');
      }
    });
    // The socket closes when QEMU dies: check at once rather than at the next poll.
    this.qmpClient.on('close', () => this.checkAlive());
    this.child?.once('exit', (code, signal) => {
      this.childExit = { code, signal };
      this.checkAlive();
    });
    this.pollTimer = setInterval(() => this.checkAlive(), PROCESS_POLL_MS);
    this.pollTimer.unref();
  }

  private checkAlive(): void {
    if (this.exitInfo || this.vmState === 'detached') return;
    if (!this.childExit && isProcessAlive(this.pid, this.startTime)) return;
    if (this.child && !this.childExit) {
      // Our own child: its exit status (signal, code) is a moment away; wait for it briefly.
      this.childGrace ??= setTimeout(() => this.onGone(), CHILD_EXIT_GRACE_MS);
      return;
    }
    this.onGone();
  }

  private onGone(): void {
    if (this.exitInfo) return;
    clearInterval(this.pollTimer);
    clearTimeout(this.childGrace);
    this.vmState = 'exited';
    this.exitInfo = { ...this.classifyExit(), at: new Date(), exitCode: this.childExit?.code, signal: this.childExit?.signal };
    this.qmpClient.close();
    removeRunFiles(this.paths, { keepLogs: true, removeDir: false });
    this.log.info({ reason: this.exitInfo.reason, detail: this.exitInfo.detail }, 'QEMU exited');
    this.emit('exit', this.exitInfo);
  }

  private classifyExit(): { reason: VmExitReason; detail: string } {
    const shutdown = this.lastShutdown?.data.reason;
    const how = this.childExit ? describeExit(this.childExit) : 'process gone';
    if (this.panicked || shutdown === 'guest-panic') return { reason: 'guest-panic', detail: 'the guest kernel panicked (pvpanic)' };
    if (shutdown === 'guest-reset' && consoleShowsPanic(this.paths.consoleLog)) {
      return { reason: 'guest-panic', detail: 'the guest kernel panicked (see console.log)' };
    }
    if (this.stopPromise) return { reason: 'stopped', detail: `stopped by podvisor (${shutdown ?? how})` };
    if (shutdown === 'guest-shutdown') return { reason: 'guest-shutdown', detail: 'the guest powered off' };
    if (shutdown === 'guest-reset') return { reason: 'guest-reboot', detail: 'the guest rebooted' };
    if (shutdown) return { reason: 'crashed', detail: `QEMU shut down: ${shutdown}` };
    return { reason: 'crashed', detail: `QEMU ended without shutting down (${how})` };
  }

  // ---------------------------------------------------------------- stop

  /**
   * Stops the VM: the graceful hook, then QMP `quit`, then SIGKILL, each with its deadline.
   * Idempotent; removes sockets and pidfile and keeps the logs.
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
        this.log.warn({ err: messageOf(e) }, 'graceful stop failed; quitting QEMU');
      }
    }
    if (!this.exitInfo) {
      try {
        await this.qmpClient.execute('quit', undefined, { timeoutMs: phaseMs });
      } catch (e) {
        this.log.warn({ err: messageOf(e) }, 'QMP quit failed');
      }
      await this.waitGone(phaseMs);
    }
    if (!this.exitInfo) {
      this.log.warn('QEMU still running after quit; sending SIGKILL');
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw internal(`cannot kill QEMU pid ${this.pid}: ${messageOf(e)}`, e);
      }
      await this.waitGone(phaseMs);
    }
    if (!this.exitInfo) throw internal(`QEMU pid ${this.pid} survived SIGKILL for ${phaseMs} ms`);
    return this.exitInfo;
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
   * stops watching. `Vm.reattach` picks it up again.
   */
  detach(): void {
    if (this.vmState !== 'running') return;
    clearInterval(this.pollTimer);
    this.qmpClient.removeAllListeners();
    this.child?.removeAllListeners('exit');
    this.qmpClient.close();
    this.vmState = 'detached';
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

  private assertRunning(what: string): void {
    if (this.vmState !== 'running') throw failedPrecondition(`cannot ${what}: VM ${this.id} is ${this.vmState}`);
  }
}

// ---------------------------------------------------------------- helpers

/** The command that runs QEMU, in the network namespace if one is given (both exec, keeping the pid). */
function inNetns(netns: string | undefined, qemuBinary: string, qemuArgs: string[]): [string, string[]] {
  if (!netns) return [qemuBinary, qemuArgs];
  if (netns.startsWith('/')) return ['nsenter', [`--net=${netns}`, '--', qemuBinary, ...qemuArgs]];
  return ['ip', ['netns', 'exec', netns, qemuBinary, ...qemuArgs]];
}

function checkReadable(what: string, path: string): void {
  try {
    accessSync(path, constants.R_OK);
    if (!statSync(path).isFile()) throw new Error('not a regular file');
  } catch (e) {
    throw invalidArgument(`VM ${what} ${path} cannot be read: ${(e as NodeJS.ErrnoException).code ?? messageOf(e)}`);
  }
}

async function killChild(child: ChildProcess, exited: unknown): Promise<void> {
  if (exited || child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    process.kill(child.pid, 'SIGKILL');
  } catch {
    return;
  }
  await withDeadline(gone, 5000, `QEMU pid ${child.pid} survived SIGKILL`).catch(() => undefined);
}

function describeExit(e: { code: number | null; signal: NodeJS.Signals | null }): string {
  return e.signal ? `killed by ${e.signal}` : `exit code ${e.code}`;
}

function consoleShowsPanic(path: string): boolean {
  return /Kernel panic - not syncing/.test(tail(path, 8192));
}
