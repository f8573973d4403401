import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, openSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { failedPrecondition, internal, invalidArgument, isPodvisorError, messageOf, notFound } from '../errors.js';
import { logger } from '../log.js';
import { readJsonFile, writeJsonAtomicSync } from '../util/atomic-file.js';
import { withDeadline } from './deadline.js';
import { createVmCgroup, enterCgroup, removeVmCgroup, removeVmCgroupSoon } from './cgroup.js';
import type { QemuIdentity, QemuUsers } from './confinement.js';
import type { ConsoleLog } from './console-log.js';
import { DiskSet } from './disks.js';
import { diskOpenerFor } from './file-grant.js';
import { hostTscKhz, qemuHasSandbox, resolveAccel } from './host.js';
import { capLogFile } from './log-cap.js';
import { isProcessAlive, readProcStat } from './proc.js';
import type { VmExitInfo } from './vm-exit.js';
import { loadVmState, MIGRATION_FD, openStateForRestore, saveVmState } from './vm-state.js';
import { DEFAULT_QEMU_BINARY, validateProfile, type VmProfile } from './profile.js';
import { buildQemuArgs, type SharedFs, type TapDevice } from './qemu-args.js';
import { QmpClient } from './qmp-client.js';
import { checkVmId, DEFAULT_CONSOLE_MAX_BYTES, lockSocketsAndOpenConsole, QmpVm, reconnectMonitors, warnIfEmulated } from './qmp-vm.js';
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

// The exit and stop types live with the code both backends share; re-exported for the callers of Vm.
export type { VmExitInfo, VmExitReason } from './vm-exit.js';
export type { VmEvents, VmState, VmStopOptions } from './qmp-vm.js';

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

const CHILD_EXIT_GRACE_MS = 200;
/** qemu.log is QEMU's stderr; some of its messages a guest can provoke. Checked on every 4th poll. */
const QEMU_LOG_MAX_BYTES = 1024 * 1024;
const QEMU_LOG_KEEP_BYTES = 64 * 1024;
/** How long a VM that paused itself on an error gets to quit before SIGKILL. */
const FATAL_STOP_QUIT_MS = 1000;

export class Vm extends QmpVm {
  protected readonly endingQemu = 'quitting QEMU';
  protected readonly fatalStopPhaseMs = FATAL_STOP_QUIT_MS;
  private readonly record: VmRecord;
  private readonly child?: ChildProcess;
  private childExit?: { code: number | null; signal: NodeJS.Signals | null };
  private childGrace?: NodeJS.Timeout;
  private polls = 0;

  private constructor(
    record: VmRecord, paths: RunDirPaths, qmp: QmpClient, diskSet: DiskSet,
    extra: { child?: ChildProcess; console?: ConsoleLog; users?: QemuUsers } = {},
  ) {
    super({
      id: record.id, pid: record.pid, startTime: record.startTime, accel: record.accel, paths, qmp, diskSet,
      console: extra.console, log: logger('vm', { sandbox: record.id, pid: record.pid }),
      uid: record.uid, users: extra.users, cgroups: record.cgroups,
    });
    this.record = record;
    this.child = extra.child;
    this.child?.once('exit', (code, signal) => {
      this.childExit = { code, signal };
      this.checkAlive();
    });
  }

  /** The saved state this VM was cloned from; undefined for a cold boot. */
  get restoredFrom(): string | undefined {
    return this.record.restoredFrom;
  }

  // ---------------------------------------------------------------- launch

  static async launch(opts: VmLaunchOptions): Promise<Vm> {
    checkVmId(opts.id);
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
      warnIfEmulated(accel, log);
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
      consoleLog = await lockSocketsAndOpenConsole(paths, consoleMaxBytes);
      Object.assign(record, { pid, startTime: stat.startTime, state: 'running' });
      const status = await qmp.execute('query-status');
      writeJsonAtomicSync(paths.stateFile, record);
      vm = new Vm(record, paths, qmp, DiskSet.create(paths.disksFile, diskOpenerFor(runAs)), { child, console: consoleLog, users: jail?.users });
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
    await vm.finishLaunch(opts.waitReady, {
      readyTimeoutMs: opts.readyTimeoutMs,
      removeDir: createdDir,
      start: async () => {
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
      },
    });
    return vm;
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
    const monitors = await reconnectMonitors(paths, {
      consoleMaxBytes: record.consoleMaxBytes ?? DEFAULT_CONSOLE_MAX_BYTES, timeoutMs: opts.timeoutMs, log: logger('vm', { sandbox: record.id }),
    });
    return QmpVm.adopt(monitors, { record, users: opts.users }, (runAs) => new Vm(
      { ...record, pid }, paths, monitors.qmp, DiskSet.load(paths.disksFile, diskOpenerFor(runAs)), { console: monitors.console, users: opts.users },
    ), 'reattached to running VM');
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

  // ---------------------------------------------------------------- watching and stopping

  protected override poll(): void {
    super.poll();
    if (++this.polls % 4 === 0 && !this.exitInfo) capLogFile(this.paths.qemuLog, QEMU_LOG_MAX_BYTES, QEMU_LOG_KEEP_BYTES);
  }

  protected override qemuAlive(): boolean {
    return !this.childExit && super.qemuAlive();
  }

  protected override exitPending(): boolean {
    if (!this.child || this.childExit) return false;
    // Our own child: its exit status (signal, code) is a moment away; wait for it briefly.
    this.childGrace ??= setTimeout(() => this.onGone(), CHILD_EXIT_GRACE_MS);
    return true;
  }

  protected override exitStatus(): Pick<VmExitInfo, 'exitCode' | 'signal'> {
    return { exitCode: this.childExit?.code, signal: this.childExit?.signal };
  }

  protected override howQemuEnded(): string {
    return this.childExit ? describeExit(this.childExit) : 'process gone';
  }

  protected override releaseAfterExit(): void {
    clearTimeout(this.childGrace);
    removeRunFiles(this.paths, { keepLogs: true, removeDir: false });
  }

  /** QMP `quit`: QEMU exits by itself. */
  protected override endQemu(phaseMs: number): Promise<void> {
    return this.quitOverQmp(phaseMs);
  }

  override detach(): void {
    if (this.state === 'running') this.child?.removeAllListeners('exit');
    super.detach();
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

/** Kills a QEMU no VM object watches (its launch never finished, or its reattach failed) and waits for it to go. */
async function killOrphan(pid: number, paths: RunDirPaths): Promise<void> {
  logger('vm').warn({ pid, runDir: paths.dir }, 'killing a QEMU no podvisord can watch (its launch never finished, or it could not be reattached)');
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  for (let i = 0; i < 200 && isProcessAlive(pid); i++) await sleep(25);
}
