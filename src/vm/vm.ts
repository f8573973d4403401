import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { accessSync, chmodSync, closeSync, constants, openSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { failedPrecondition, internal, invalidArgument, isPodvisorError, messageOf, notFound } from '../errors.js';
import { logger, type Logger } from '../log.js';
import { readJsonFile, writeJsonAtomicSync } from '../util/atomic-file.js';
import { withDeadline } from './deadline.js';
import { createVmCgroup, enterCgroup, removeVmCgroup, removeVmCgroupSoon } from './cgroup.js';
import type { QemuIdentity, QemuUsers } from './confinement.js';
import { ConsoleLog } from './console-log.js';
import { DiskSet, type DiskAddress, type HotplugDiskRequest } from './disks.js';
import { isFatalRunState, watchFatalStop } from './fatal-stop.js';
import { grantFileTo } from './file-grant.js';
import { hostTscKhz, qemuHasSandbox, resolveAccel } from './host.js';
import { capLogFile } from './log-cap.js';
import { isProcessAlive, readProcStat } from './proc.js';
import { loadVmState, MIGRATION_FD, openStateForRestore, saveVmState } from './vm-state.js';
import { DEFAULT_QEMU_BINARY, validateProfile, type VmProfile } from './profile.js';
import { buildQemuArgs, type SharedFs, type TapDevice } from './qemu-args.js';
import { QmpClient } from './qmp-client.js';
import type { QmpEvent, RunState } from './qmp-types.js';
import { consoleTail, looksLikeOurQemu, prepareRunDir, readPidFile, removeRunFiles, runDirPaths, tail, type RunDirPaths } from './run-dir.js';

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
  /**
   * A template clone: start from this saved device state (src/vm/vm-state.ts) instead of
   * booting; the profile's memory must map the template's RAM file with `share: false`.
   * The state is loaded before the guest runs, so everything after (`cont`, waitReady) is
   * the cold path's.
   */
  restoreFrom?: string;
  /** A NIC with no traffic behind it (a template's; its clones put a tap behind the same device). */
  placeholderNic?: boolean;
  /** How long QEMU may take to answer QMP. */
  startTimeoutMs?: number;
  /**
   * Called once the guest runs, e.g. the agent client's readiness check; failure stops the
   * VM. The VM ending (QEMU exits, or pauses itself on an error) fails the launch at once.
   */
  waitReady?: (vm: Vm, deadline: number) => Promise<void>;
  readyTimeoutMs?: number;
  /**
   * Run QEMU as its own unprivileged uid inside per-VM cgroup limits. Without it QEMU stays
   * root (the VM tests); the pod layer always passes it.
   */
  confinement?: VmConfinement;
  /** Start a VM even though this QEMU has no `-sandbox` (seccomp). Off: such a launch is refused. */
  allowNoSeccomp?: boolean;
  /** Bytes of serial console kept on the host (a ring of two halves); default 2 MiB. */
  consoleMaxBytes?: number;
}

export interface VmConfinement {
  users: QemuUsers;
  /** Per-VM cgroups go under this path; "" places no limits. */
  cgroupParent: string;
  /** QEMU's own memory above guest RAM. */
  overheadMiB: number;
  pidsMax: number;
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
  | 'crashed'
  /** QEMU paused the VM on an error it cannot continue from (KVM internal error, I/O error); podvisor ended it. */
  | 'vm-error';

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
  /**
   * `launching` is written right after spawn, before QMP answers: a daemon that dies in that
   * window leaves a record that tells the next one to kill this QEMU rather than lose it.
   */
  state?: 'launching' | 'running';
  /** The uid QEMU dropped to (confined VMs). */
  uid?: number;
  gid?: number;
  /** The VM's cgroup directories, removed when QEMU is gone. */
  cgroups?: string[];
  consoleMaxBytes?: number;
  /** The saved state a template clone started from (absent: a cold boot). */
  restoredFrom?: string;
}

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const PROCESS_POLL_MS = 250;
const CHILD_EXIT_GRACE_MS = 200;
const DEFAULT_CONSOLE_MAX_BYTES = 2 * 1024 * 1024;
/** qemu.log is QEMU's stderr; some of its messages a guest can provoke. Checked on every 4th poll. */
const QEMU_LOG_MAX_BYTES = 1024 * 1024;
const QEMU_LOG_KEEP_BYTES = 64 * 1024;
/** How long a VM that paused itself on an error gets to quit before SIGKILL. */
const FATAL_STOP_QUIT_MS = 1000;

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
  private fatalStatus?: RunState;
  private polls = 0;
  private readonly record: VmRecord;
  private readonly console?: ConsoleLog;
  private readonly users?: QemuUsers;

  private constructor(
    record: VmRecord, paths: RunDirPaths, qmp: QmpClient, diskSet: DiskSet,
    extra: { child?: ChildProcess; console?: ConsoleLog; users?: QemuUsers } = {},
  ) {
    super();
    this.record = record;
    this.id = record.id;
    this.pid = record.pid;
    this.startTime = record.startTime;
    this.accel = record.accel;
    this.paths = paths;
    this.qmpClient = qmp;
    this.diskSet = diskSet;
    this.child = extra.child;
    this.console = extra.console;
    this.users = extra.users;
    this.log = logger('vm', { sandbox: record.id, pid: record.pid });
    this.watch();
  }

  /** The uid QEMU runs as (undefined: root, an unconfined VM). */
  get uid(): number | undefined {
    return this.record.uid;
  }

  /** The VM's cgroup directories (empty when it has no limits). */
  get cgroups(): string[] {
    return this.record.cgroups ?? [];
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

  /** The saved state this VM was cloned from; undefined for a cold boot. */
  get restoredFrom(): string | undefined {
    return this.record.restoredFrom;
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
    const seccomp = qemuHasSandbox(qemuBinary);
    const sandbox = seccomp === true;
    // A binary that is not there at all is reported by the spawn itself.
    if (seccomp === false && !opts.allowNoSeccomp) {
      throw failedPrecondition(`${qemuBinary} has no -sandbox (seccomp) support, so VMs do not start; install a QEMU built with seccomp, or set [vm] allow_no_seccomp = true to run without the filter`);
    }
    const jail = opts.confinement;
    const runAs: QemuIdentity | undefined = jail?.users.allocate(opts.id);
    const consoleMaxBytes = opts.consoleMaxBytes ?? DEFAULT_CONSOLE_MAX_BYTES;
    const log = logger('vm', { sandbox: opts.id });
    let createdDir = false;
    let cgroups: string[] = [];
    let child: ChildProcess | undefined;
    let childExit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let spawnError: Error | undefined;
    let qmp: QmpClient | undefined;
    let consoleLog: ConsoleLog | undefined;
    let vm: Vm;
    try {
      const qemuArgs = buildQemuArgs({
        id: opts.id, profile: opts.profile, paths, accel, tscKhz, sandbox, runAs,
        tap: opts.tap, sharedFs: opts.sharedFs, incomingDefer: opts.incomingDefer || opts.restoreFrom !== undefined,
        placeholderNic: opts.placeholderNic,
      });
      if (jail && jail.cgroupParent) {
        cgroups = createVmCgroup(jail.cgroupParent, opts.id, {
          memoryBytes: (opts.profile.memoryMiB + jail.overheadMiB) * 1024 * 1024,
          pidsMax: jail.pidsMax,
        });
      }
      createdDir = prepareRunDir(paths);
      const [command, args] = inNetns(opts.netns, qemuBinary, qemuArgs);
      if (accel === 'tcg') log.warn('this pod VM runs under TCG emulation, which is not a security boundary: do not run untrusted pods on this node');
      log.info({ accel, machine: opts.profile.machine, vcpus: opts.profile.vcpus, memoryMiB: opts.profile.memoryMiB, netns: opts.netns, uid: runAs?.uid }, 'launching QEMU');
      log.debug({ command, args }, 'QEMU command line');

      const out = openSync(paths.qemuLog, 'a', 0o600);
      let state: number | undefined;
      try {
        state = opts.restoreFrom !== undefined ? openStateForRestore(opts.restoreFrom) : undefined;
        // Own session (setsid) and unref: QEMU outlives podvisord and gets none of its signals.
        const stdio: Array<'ignore' | number> = ['ignore', out, out];
        if (state !== undefined) stdio[MIGRATION_FD] = state;
        child = spawn(command, args, { detached: true, stdio });
      } finally {
        closeSync(out);
        // QEMU holds its own copy of the state descriptor.
        if (state !== undefined) closeSync(state);
      }
      child.unref();
      const exited = new AbortController();
      child.once('error', (e) => {
        spawnError = e;
        exited.abort();
      });
      child.once('exit', (code, signal) => {
        childExit = { code, signal };
        exited.abort();
      });
      const record: VmRecord = {
        id: opts.id, pid: child.pid ?? 0, startTime: '', qemuBinary, accel, launchedAt: new Date().toISOString(),
        state: 'launching', uid: runAs?.uid, gid: runAs?.gid, cgroups, consoleMaxBytes,
        ...(opts.restoreFrom !== undefined ? { restoredFrom: opts.restoreFrom } : {}),
      };
      if (child.pid !== undefined) {
        // Before anything can fail or the daemon can die: a record, and the limits (QEMU is
        // held at -S, so the guest has touched no memory yet).
        record.startTime = readProcStat(child.pid)?.startTime ?? '';
        writeJsonAtomicSync(paths.stateFile, record);
        enterCgroup(cgroups, child.pid);
      }

      qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: opts.startTimeoutMs ?? 30_000, signal: exited.signal });
      const pid = readPidFile(paths.pidFile) ?? child.pid;
      const stat = pid === undefined ? undefined : readProcStat(pid);
      if (pid === undefined || !stat) throw internal(`QEMU answered QMP but its pid is unknown (${paths.pidFile})`);
      for (const sock of [paths.qmpSocket, paths.agentSocket, paths.consoleSocket]) chmodSync(sock, 0o600);
      consoleLog = await ConsoleLog.connect(paths.consoleSocket, paths.consoleLog, paths.consoleLogOld, consoleMaxBytes);
      Object.assign(record, { pid, startTime: stat.startTime, state: 'running' });
      const status = await qmp.execute('query-status');
      writeJsonAtomicSync(paths.stateFile, record);
      vm = new Vm(record, paths, qmp, DiskSet.create(paths.disksFile, fileGrant(runAs)), { child, console: consoleLog, users: jail?.users });
      if (childExit) vm.childExit = childExit;

      vm.log.info({ status: status.status }, 'QEMU is up');
    } catch (e) {
      qmp?.close();
      consoleLog?.close();
      if (child) await killChild(child, childExit);
      const why = spawnError
        ? `cannot run ${qemuBinary}: ${messageOf(spawnError)}`
        : childExit
          ? `QEMU exited during start-up (${describeExit(childExit)}): ${tail(paths.qemuLog) || 'no output'}`
          : messageOf(e);
      removeVmCgroup(cgroups);
      if (runAs) jail?.users.release(runAs.uid);
      if (child || createdDir) removeRunFiles(paths, { keepLogs: false, removeDir: createdDir });
      log.warn({ err: why }, 'VM launch failed');
      if (isPodvisorError(e) && !spawnError && !childExit) throw e;
      throw failedPrecondition(`VM ${opts.id} failed to start: ${why}`, e);
    }
    try {
      if (opts.restoreFrom !== undefined) {
        const t = performance.now();
        await withDeadline(
          loadVmState(vm.qmpClient, { id: opts.id, deadline: Date.now() + (opts.readyTimeoutMs ?? 60_000) }),
          opts.readyTimeoutMs ?? 60_000, `VM ${opts.id} did not load its saved state in time`,
        );
        vm.restoreMs = performance.now() - t;
      }
      // The guest runs from here (incomingDefer alone: the caller loads a state first).
      if (!opts.incomingDefer) await vm.qmpClient.execute('cont');
      if (opts.waitReady) await vm.runReadyHook(opts.waitReady, opts.readyTimeoutMs ?? 60_000);
    } catch (e) {
      // A QMP error here is most often QEMU dying under it: say that, in QEMU's words.
      const ended = vm.exitInfo ?? (await Promise.race([vm.waitExit(), sleep(CHILD_EXIT_GRACE_MS * 2).then(() => undefined)]));
      await vm.stop({ timeoutMs: 5000 }).catch(() => undefined);
      removeRunFiles(paths, { keepLogs: false, removeDir: createdDir });
      if (ended && ended.reason !== 'stopped' && !isPodvisorError(e, 'FAILED_PRECONDITION')) throw vm.endedBeforeReady(ended, e);
      throw e;
    }
    return vm;
  }

  private endedBeforeReady(info: VmExitInfo, cause?: unknown): Error {
    return failedPrecondition(`VM ${this.id} ended before it was ready: ${info.detail}`, cause);
  }

  /**
   * Runs the readiness hook against the VM's end: QEMU exiting, or pausing itself on an error,
   * fails the launch at once with QEMU's own words instead of waiting out the deadline.
   */
  private async runReadyHook(hook: NonNullable<VmLaunchOptions['waitReady']>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const ended = this.waitExit().then((info) => {
      throw this.endedBeforeReady(info);
    });
    ended.catch(() => undefined);
    try {
      await withDeadline(Promise.race([hook(this, deadline), ended]), timeoutMs, `VM ${this.id} was not ready within ${timeoutMs} ms`);
    } catch (e) {
      this.log.warn({ err: messageOf(e), console: consoleTail(this.paths, 2000) }, 'VM did not become ready; stopping it');
      await this.stop({ timeoutMs: 5000 });
      throw e;
    }
  }

  /** How long loading a template's saved state took (ms); undefined for a cold boot. */
  restoreMs?: number;

  /**
   * Saves this template VM's device state to `stateFile` and leaves it paused; stop it
   * afterwards. Its RAM stays in its shared RAM file. Only an unconfined (root) QEMU can
   * reach the socket the state goes through (src/vm/vm-state.ts).
   */
  async saveState(stateFile: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    this.assertRunning('save the VM state');
    if (this.record.uid !== undefined) throw failedPrecondition(`VM ${this.id} runs confined (uid ${this.record.uid}); only a template VM, launched unconfined, can be saved`);
    await saveVmState(this.qmpClient, { id: this.id, socketPath: this.paths.migrationSocket, stateFile, timeoutMs: opts.timeoutMs });
  }

  // ---------------------------------------------------------------- reattach

  /**
   * Finds a VM launched by an earlier podvisord from its run directory. A QEMU whose launch
   * never finished (the daemon died between spawn and QMP) is killed, not adopted: nothing
   * else would ever stop it.
   */
  static async reattach(runDir: string, opts: { timeoutMs?: number; users?: QemuUsers } = {}): Promise<Vm> {
    const paths = runDirPaths(runDir);
    const record = readJsonFile<VmRecord>(paths.stateFile);
    const pidFromFile = readPidFile(paths.pidFile);
    const pid = record?.pid || pidFromFile;
    const alive = pid !== undefined && isProcessAlive(pid, record?.startTime || undefined) && looksLikeOurQemu(pid, paths);
    if (!record || record.state === 'launching') {
      if (alive) await killOrphan(pid, paths);
      removeVmCgroupSoon(record?.cgroups ?? []);
      removeRunFiles(paths, { keepLogs: true, removeDir: false });
      throw notFound(alive
        ? `the VM in ${runDir} never finished launching (podvisord died during it); its QEMU pid ${pid} was killed`
        : `no running VM in ${runDir} (no ${basename(paths.stateFile)} or pidfile)`);
    }
    if (!alive) {
      removeVmCgroupSoon(record.cgroups ?? []);
      removeRunFiles(paths, { keepLogs: true, removeDir: false });
      throw notFound(`VM ${record.id} is not running: QEMU pid ${pid} is gone`);
    }
    const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: opts.timeoutMs ?? 10_000 });
    let consoleLog: ConsoleLog | undefined;
    try {
      consoleLog = await ConsoleLog.connect(paths.consoleSocket, paths.consoleLog, paths.consoleLogOld, record.consoleMaxBytes ?? DEFAULT_CONSOLE_MAX_BYTES);
    } catch (e) {
      logger('vm', { sandbox: record.id }).warn({ err: messageOf(e) }, 'cannot reconnect to the console; its output is dropped');
    }
    const runAs = record.uid !== undefined && record.gid !== undefined ? { uid: record.uid, gid: record.gid } : undefined;
    if (runAs) opts.users?.reserve(runAs.uid);
    const vm = new Vm({ ...record, pid }, paths, qmp, DiskSet.load(paths.disksFile, fileGrant(runAs)), { console: consoleLog, users: opts.users });
    await vm.diskSet.reconcile(qmp, 10_000);
    const status = await qmp.execute('query-status');
    vm.log.info({ status: status.status, disks: vm.diskSet.list().length }, 'reattached to running VM');
    if (isFatalRunState(status.status)) vm.onFatalStop(status.status);
    return vm;
  }

  /**
   * Kills whatever QEMU still serves `runDir` when it cannot be reattached (QMP gone, a
   * record that never became `running`, a daemon killed mid-launch): recovery gives such a
   * VM up, and nothing else would ever stop it. A recycled pid is never touched.
   */
  static async killLeftover(runDir: string): Promise<boolean> {
    const paths = runDirPaths(runDir);
    const record = readJsonFile<VmRecord>(paths.stateFile);
    const pid = record?.pid || readPidFile(paths.pidFile);
    if (pid === undefined || !isProcessAlive(pid) || !looksLikeOurQemu(pid, paths)) return false;
    await killOrphan(pid, paths);
    removeVmCgroupSoon(record?.cgroups ?? []);
    return true;
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
    watchFatalStop(this.qmpClient, (status) => this.onFatalStop(status));
    // The socket closes when QEMU dies: check at once rather than at the next poll.
    this.qmpClient.on('close', () => this.checkAlive());
    this.child?.once('exit', (code, signal) => {
      this.childExit = { code, signal };
      this.checkAlive();
    });
    this.pollTimer = setInterval(() => this.poll(), PROCESS_POLL_MS);
    this.pollTimer.unref();
  }

  private poll(): void {
    this.checkAlive();
    if (++this.polls % 4 === 0 && !this.exitInfo) capLogFile(this.paths.qemuLog, QEMU_LOG_MAX_BYTES, QEMU_LOG_KEEP_BYTES);
  }

  /**
   * QEMU paused the VM on an error the guest cannot continue from. Ending the VM at once is
   * what lets a boot fail in seconds and a running sandbox turn NOTREADY; a paused QEMU would
   * otherwise hold its memory until someone noticed.
   */
  private onFatalStop(status: RunState): void {
    if (this.fatalStatus || this.exitInfo || this.stopPromise) return;
    this.fatalStatus = status;
    this.log.warn({ status, qemu: tail(this.paths.qemuLog, 600) }, 'QEMU paused the VM on an error; ending it');
    this.stopPromise = this.doStop({ timeoutMs: FATAL_STOP_QUIT_MS });
    this.stopPromise.catch((e) => this.log.error({ err: messageOf(e) }, 'ending the paused VM failed'));
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
    this.console?.close();
    removeVmCgroupSoon(this.cgroups);
    if (this.record.uid !== undefined) this.users?.release(this.record.uid);
    removeRunFiles(this.paths, { keepLogs: true, removeDir: false });
    this.log.info({ reason: this.exitInfo.reason, detail: this.exitInfo.detail }, 'QEMU exited');
    this.emit('exit', this.exitInfo);
  }

  private classifyExit(): { reason: VmExitReason; detail: string } {
    const shutdown = this.lastShutdown?.data.reason;
    const how = this.childExit ? describeExit(this.childExit) : 'process gone';
    const said = qemuSaid(this.paths);
    if (this.fatalStatus === 'guest-panicked') return { reason: 'guest-panic', detail: `the guest kernel panicked; QEMU paused the VM (guest-panicked)${said}` };
    if (this.fatalStatus) return { reason: 'vm-error', detail: `QEMU paused the VM on an error (${this.fatalStatus})${said}` };
    if (this.panicked || shutdown === 'guest-panic') return { reason: 'guest-panic', detail: `the guest kernel panicked (pvpanic)${said}` };
    if (shutdown === 'guest-reset' && consoleShowsPanic(this.paths)) {
      return { reason: 'guest-panic', detail: `the guest kernel panicked${said}` };
    }
    if (this.stopPromise) return { reason: 'stopped', detail: `stopped by podvisor (${shutdown ?? how})` };
    if (shutdown === 'guest-shutdown') return { reason: 'guest-shutdown', detail: 'the guest powered off' };
    if (shutdown === 'guest-reset') return { reason: 'guest-reboot', detail: `the guest rebooted${said}` };
    if (shutdown) return { reason: 'crashed', detail: `QEMU shut down: ${shutdown}${said}` };
    return { reason: 'crashed', detail: `QEMU ended without shutting down (${how})${said}` };
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
    // QEMU drops console output while nobody reads; the next daemon reconnects (reattach).
    this.console?.close();
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

function consoleShowsPanic(paths: RunDirPaths): boolean {
  return /Kernel panic - not syncing/.test(consoleTail(paths, 8192));
}

/**
 * What QEMU and the guest last said, for error messages: the tail of qemu.log (QEMU's own
 * messages) and of the console, bounded reads both.
 */
function qemuSaid(paths: RunDirPaths): string {
  const qemu = tail(paths.qemuLog, 600);
  const guest = consoleTail(paths, 8192);
  const lines = (t: string) => t.split('\n').map((l) => l.trim()).filter(Boolean);
  // A panic's own line says more than the stack trace after it.
  const panic = lines(guest).filter((l) => /Kernel panic - not syncing/.test(l)).at(-1);
  return [
    qemu ? `; QEMU said: ${lines(qemu).slice(-6).join(' | ')}` : '',
    panic ? `; panic: ${panic.replace(/^\[[\s\d.]+\]\s*/, '').slice(0, 300)}` : '',
    guest ? `; console: ${lines(guest).slice(-4).join(' | ').slice(-600)}` : '',
  ].join('');
}

/** Kills a QEMU that no record owns (its launch never finished) and waits for it to go. */
async function killOrphan(pid: number, paths: RunDirPaths): Promise<void> {
  logger('vm').warn({ pid, runDir: paths.dir }, 'killing a QEMU whose launch never finished (podvisord died during it)');
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  for (let i = 0; i < 200 && isProcessAlive(pid); i++) await sleep(25);
}

/**
 * How a confined QEMU reaches a disk plugged after it dropped to its uid: podvisord opens
 * the file and hands it over (src/vm/file-grant.ts). Unconfined QEMU opens the path itself.
 */
function fileGrant(runAs: QemuIdentity | undefined) {
  return runAs ? (path: string, readOnly: boolean) => grantFileTo(runAs, path, readOnly) : undefined;
}
