import { EventEmitter } from 'node:events';
import { chmodSync, readdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { failedPrecondition, internal, invalidArgument, isPodvisorError, messageOf, notFound, unimplemented } from '../../errors.js';
import { logger, type Logger } from '../../log.js';
import { readJsonFile, writeJsonAtomicSync } from '../../util/atomic-file.js';
import { ConsoleLog } from '../console-log.js';
import { withDeadline } from '../deadline.js';
import { DiskSet, type DiskAddress, type HotplugDiskRequest } from '../disks.js';
import { isFatalRunState, watchFatalStop } from '../fatal-stop.js';
import { hostTscKhz, resolveAccel } from '../host.js';
import { isProcessAlive, readProcStat } from '../proc.js';
import { validateProfile } from '../profile.js';
import type { PodVm, PodVmLaunchOptions } from '../pod-vm.js';
import { QmpClient } from '../qmp-client.js';
import type { QmpEvent, RunState } from '../qmp-types.js';
import { consoleTail, looksLikeOurQemu, prepareRunDir, removeRunFiles, runDirPaths, type RunDirPaths } from '../run-dir.js';
import type { VmEvents, VmExitInfo, VmExitReason, VmState, VmStopOptions } from '../vm.js';
import type { LibvirtConnection } from './binding.js';
import { buildDomainXml, domainName } from './domain-xml.js';

/**
 * A pod VM run by libvirt: a transient domain per sandbox (gone from libvirt when its QEMU
 * ends), so `virsh list` shows it and libvirt confines its QEMU (its user, cgroups and
 * security driver). libvirtd may restart under it: the domain, and podvisor's own QMP
 * monitor on it, keep running.
 */

/** What the backend records in the run directory, so a later podvisord finds the domain again. */
interface LibvirtVmRecord {
  id: string;
  domain: string;
  uuid?: string;
  pid: number;
  startTime: string;
  accel: 'kvm' | 'tcg';
  launchedAt: string;
  /** `launching` until QMP answered: a daemon that died before that destroys the domain instead of adopting it. */
  state: 'launching' | 'running';
  consoleMaxBytes: number;
}

const RECORD_FILE = 'libvirt-domain.json';
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const PROCESS_POLL_MS = 250;
const DEFAULT_CONSOLE_MAX_BYTES = 2 * 1024 * 1024;
const PID_LOOKUP_MS = 10_000;

export class LibvirtVm extends EventEmitter<VmEvents> implements PodVm {
  readonly id: string;
  readonly paths: RunDirPaths;
  readonly pid: number;
  readonly accel: 'kvm' | 'tcg';
  readonly domain: string;
  private readonly log: Logger;
  private vmState: VmState = 'running';
  private exitInfo?: VmExitInfo;
  private stopPromise?: Promise<VmExitInfo>;
  private lastShutdown?: QmpEvent<'SHUTDOWN'>;
  private panicked = false;
  private fatalStatus?: RunState;
  private pollTimer?: NodeJS.Timeout;

  private constructor(
    private readonly conn: LibvirtConnection,
    private readonly record: LibvirtVmRecord,
    paths: RunDirPaths,
    private readonly qmpClient: QmpClient,
    private readonly diskSet: DiskSet,
    private readonly console?: ConsoleLog,
  ) {
    super();
    this.id = record.id;
    this.pid = record.pid;
    this.accel = record.accel;
    this.domain = record.domain;
    this.paths = paths;
    this.log = logger('vm-libvirt', { sandbox: record.id, domain: record.domain, pid: record.pid });
    this.watch();
  }

  get state(): VmState {
    return this.vmState;
  }

  get qmp(): QmpClient {
    return this.qmpClient;
  }

  get agentSocket(): string {
    return this.paths.agentSocket;
  }

  get exited(): VmExitInfo | undefined {
    return this.exitInfo;
  }

  // ---------------------------------------------------------------- launch

  static async launch(conn: LibvirtConnection, opts: PodVmLaunchOptions): Promise<LibvirtVm> {
    if (!ID_PATTERN.test(opts.id)) {
      throw invalidArgument(`VM id ${JSON.stringify(opts.id)} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`);
    }
    validateProfile(opts.profile);
    if (opts.netns !== undefined || opts.tap) {
      throw unimplemented('the libvirt VM backend cannot put a pod VM on its CNI network: libvirt starts QEMU in the host network namespace, ' +
        "while podvisor's pod network hands the VM a tap inside the pod's namespace; use the qemu backend on nodes with a CNI network");
    }
    if (opts.incomingDefer) throw unimplemented('the libvirt VM backend cannot restore a VM template (incoming migration); use the qemu backend');
    const paths = runDirPaths(opts.runDir);
    const accel = await resolveAccel(opts.profile.accel);
    const name = domainName(opts.id);
    const consoleMaxBytes = opts.consoleMaxBytes ?? DEFAULT_CONSOLE_MAX_BYTES;
    const log = logger('vm-libvirt', { sandbox: opts.id, domain: name });
    // Confinement is libvirt's here (qemu.conf's user, its cgroups, its security driver); podvisor's
    // per-VM uid and cgroup limits (opts.confinement) are the QEMU backend's. No <memtune> hard
    // limit either: libvirt then raises QEMU's RLIMIT_MEMLOCK to it, which needs CAP_SYS_RESOURCE.
    const xml = buildDomainXml({ name, profile: opts.profile, paths, accel, tscKhz: opts.profile.tscKhz ?? hostTscKhz(), sharedFs: opts.sharedFs });
    const createdDir = prepareRunDir(paths);
    const recordFile = join(paths.dir, RECORD_FILE);
    const record: LibvirtVmRecord = {
      id: opts.id, domain: name, pid: 0, startTime: '', accel, launchedAt: new Date().toISOString(), state: 'launching', consoleMaxBytes,
    };
    let qmp: QmpClient | undefined;
    let consoleLog: ConsoleLog | undefined;
    let vm: LibvirtVm;
    try {
      // Before the domain exists: a daemon that dies from here on leaves a record that says to destroy it.
      writeJsonAtomicSync(recordFile, record);
      if (accel === 'tcg') log.warn('this pod VM runs under TCG emulation, which is not a security boundary: do not run untrusted pods on this node');
      log.info({ accel, machine: opts.profile.machine, vcpus: opts.profile.vcpus, memoryMiB: opts.profile.memoryMiB, uri: conn.uri }, 'creating libvirt domain');
      log.debug({ xml }, 'domain XML');
      const dom = await conn.createXML(xml);
      record.uuid = await conn.uuid(dom).catch(() => undefined);
      const pid = await findQemuPid(paths, PID_LOOKUP_MS);
      const stat = readProcStat(pid);
      if (!stat) throw internal(`QEMU pid ${pid} of domain ${name} vanished`);
      qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: opts.startTimeoutMs ?? 30_000 });
      for (const sock of [paths.qmpSocket, paths.agentSocket, paths.consoleSocket]) chmodSync(sock, 0o600);
      consoleLog = await ConsoleLog.connect(paths.consoleSocket, paths.consoleLog, paths.consoleLogOld, consoleMaxBytes);
      Object.assign(record, { pid, startTime: stat.startTime, state: 'running' });
      writeJsonAtomicSync(recordFile, record);
      vm = new LibvirtVm(conn, record, paths, qmp, DiskSet.create(paths.disksFile), consoleLog);
      const status = await qmp.execute('query-status');
      vm.log.info({ status: status.status, uuid: record.uuid }, 'libvirt domain is up');
    } catch (e) {
      qmp?.close();
      consoleLog?.close();
      await conn.destroy(name).catch((err) => log.warn({ err: messageOf(err) }, 'could not destroy the half-started domain'));
      removeRunFiles(paths, { keepLogs: false, removeDir: createdDir });
      rmSync(recordFile, { force: true });
      log.warn({ err: messageOf(e) }, 'VM launch failed');
      if (isPodvisorError(e)) throw e;
      throw failedPrecondition(`VM ${opts.id} failed to start under libvirt: ${messageOf(e)}`, e);
    }
    if (opts.waitReady) {
      const timeoutMs = opts.readyTimeoutMs ?? 60_000;
      const ended = vm.waitExit().then((info) => {
        throw failedPrecondition(`VM ${opts.id} ended before it was ready: ${info.detail}`);
      });
      ended.catch(() => undefined);
      try {
        await withDeadline(Promise.race([opts.waitReady(vm, Date.now() + timeoutMs), ended]), timeoutMs, `VM ${opts.id} was not ready within ${timeoutMs} ms`);
      } catch (e) {
        vm.log.warn({ err: messageOf(e), console: consoleTail(paths, 2000) }, 'VM did not become ready; destroying it');
        await vm.destroy({ timeoutMs: 5000 }).catch(() => undefined);
        throw e;
      }
    }
    return vm;
  }

  // ---------------------------------------------------------------- reattach

  /** Finds the domain an earlier podvisord started for `runDir` through libvirt, and takes it back. */
  static async reattach(conn: LibvirtConnection, runDir: string, opts: { timeoutMs?: number } = {}): Promise<LibvirtVm> {
    const paths = runDirPaths(runDir);
    const recordFile = join(paths.dir, RECORD_FILE);
    const record = readJsonFile<LibvirtVmRecord>(recordFile);
    if (!record || record.state !== 'running') {
      // Never finished launching: a domain may still have come up; nothing else would ever end it.
      const ended = await LibvirtVm.killLeftover(conn, runDir);
      throw notFound(ended
        ? `the libvirt domain for ${runDir} never finished launching (podvisord died during it); it was destroyed`
        : `no running libvirt domain for ${runDir}`);
    }
    const state = await conn.state(record.domain);
    if (state === undefined || state === 'shutoff' || state === 'crashed') {
      forget(paths);
      throw notFound(`VM ${record.id} is not running: libvirt has no running domain ${record.domain}${state ? ` (${state})` : ''}`);
    }
    // The same QEMU, or libvirt's answer is stale: the pid (with its start time) must still be that domain's.
    const pid = isProcessAlive(record.pid, record.startTime) && looksLikeOurQemu(record.pid, paths)
      ? record.pid
      : await findQemuPid(paths, 2000);
    const stat = readProcStat(pid);
    const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: opts.timeoutMs ?? 10_000 });
    let consoleLog: ConsoleLog | undefined;
    try {
      consoleLog = await ConsoleLog.connect(paths.consoleSocket, paths.consoleLog, paths.consoleLogOld, record.consoleMaxBytes);
    } catch (e) {
      logger('vm-libvirt', { sandbox: record.id }).warn({ err: messageOf(e) }, 'cannot reconnect to the console; its output is dropped');
    }
    const vm = new LibvirtVm(conn, { ...record, pid, startTime: stat?.startTime ?? record.startTime }, paths, qmp, DiskSet.load(paths.disksFile), consoleLog);
    await vm.diskSet.reconcile(qmp, 10_000);
    const status = await qmp.execute('query-status');
    vm.log.info({ status: status.status, libvirtState: state, disks: vm.diskSet.list().length }, 'reattached to the libvirt domain');
    if (isFatalRunState(status.status)) vm.onFatalStop(status.status);
    return vm;
  }

  /** Destroys the domain that serves `runDir`, by its record or else by the sandbox id the directory is named after. */
  static async killLeftover(conn: LibvirtConnection, runDir: string): Promise<boolean> {
    const paths = runDirPaths(runDir);
    const record = readJsonFile<LibvirtVmRecord>(join(paths.dir, RECORD_FILE));
    const name = record?.domain ?? domainName(basename(runDir));
    const ended = await conn.destroy(name);
    if (ended) logger('vm-libvirt').warn({ domain: name, runDir }, 'destroyed a libvirt domain that could not be reattached');
    forget(paths);
    return ended;
  }

  // ---------------------------------------------------------------- state

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
    this.qmpClient.on('close', () => this.checkAlive());
    this.pollTimer = setInterval(() => this.checkAlive(), PROCESS_POLL_MS);
    this.pollTimer.unref();
  }

  /** QEMU paused the VM on an error it cannot continue from: end it now (as the QEMU backend does). */
  private onFatalStop(status: RunState): void {
    if (this.fatalStatus || this.exitInfo || this.stopPromise) return;
    this.fatalStatus = status;
    this.log.warn({ status }, 'QEMU paused the VM on an error; destroying the domain');
    this.stopPromise = this.doStop({ timeoutMs: 2000 });
    this.stopPromise.catch((e) => this.log.error({ err: messageOf(e) }, 'ending the paused VM failed'));
  }

  private checkAlive(): void {
    if (this.exitInfo || this.vmState === 'detached') return;
    if (isProcessAlive(this.pid, this.record.startTime)) return;
    this.onGone();
  }

  private onGone(): void {
    if (this.exitInfo) return;
    clearInterval(this.pollTimer);
    this.vmState = 'exited';
    this.exitInfo = { ...this.classifyExit(), at: new Date() };
    this.qmpClient.close();
    this.console?.close();
    forget(this.paths);
    this.log.info({ reason: this.exitInfo.reason, detail: this.exitInfo.detail }, 'QEMU exited');
    this.emit('exit', this.exitInfo);
  }

  private classifyExit(): { reason: VmExitReason; detail: string } {
    const shutdown = this.lastShutdown?.data.reason;
    const guest = consoleTail(this.paths, 8192);
    const said = guest ? `; console: ${guest.split('\n').map((l) => l.trim()).filter(Boolean).slice(-4).join(' | ').slice(-600)}` : '';
    if (this.fatalStatus === 'guest-panicked' || this.panicked || shutdown === 'guest-panic' ||
      (shutdown === 'guest-reset' && /Kernel panic - not syncing/.test(guest))) {
      return { reason: 'guest-panic', detail: `the guest kernel panicked${said}` };
    }
    if (this.fatalStatus) return { reason: 'vm-error', detail: `QEMU paused the VM on an error (${this.fatalStatus})${said}` };
    if (this.stopPromise) return { reason: 'stopped', detail: `stopped by podvisor (${shutdown ?? 'libvirt destroyed the domain'})` };
    if (shutdown === 'guest-shutdown') return { reason: 'guest-shutdown', detail: 'the guest powered off' };
    if (shutdown === 'guest-reset') return { reason: 'guest-reboot', detail: `the guest rebooted${said}` };
    if (shutdown) return { reason: 'crashed', detail: `QEMU shut down: ${shutdown}${said}` };
    return { reason: 'crashed', detail: `the QEMU of domain ${this.domain} ended without shutting down (killed, or destroyed outside podvisor)${said}` };
  }

  // ---------------------------------------------------------------- stop

  /** The graceful hook, then libvirt's destroy, then (libvirtd unreachable) QMP quit and SIGKILL. Idempotent. */
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
        this.log.warn({ err: messageOf(e) }, 'graceful stop failed; destroying the domain');
      }
    }
    if (!this.exitInfo) {
      try {
        await withDeadline(this.conn.destroy(this.domain), phaseMs, `libvirt did not destroy domain ${this.domain} within ${phaseMs} ms`);
      } catch (e) {
        this.log.warn({ err: messageOf(e) }, 'libvirt destroy failed; quitting QEMU over QMP');
        await this.qmpClient.execute('quit', undefined, { timeoutMs: phaseMs }).catch(() => undefined);
      }
      await this.waitGone(phaseMs);
    }
    if (!this.exitInfo) {
      this.log.warn('QEMU still running; sending SIGKILL');
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw internal(`cannot kill QEMU pid ${this.pid}: ${messageOf(e)}`, e);
      }
      await this.waitGone(phaseMs);
    }
    if (!this.exitInfo) throw internal(`QEMU pid ${this.pid} of domain ${this.domain} survived SIGKILL for ${phaseMs} ms`);
    await this.waitDomainForgotten(phaseMs);
    return this.exitInfo;
  }

  /**
   * A QEMU that ended by itself (the guest's shutdown) is gone before libvirtd has read its
   * monitor's EOF and dropped the transient domain; a stopped pod must not still show in
   * `virsh list`, so wait (bounded) for libvirt to forget it too.
   */
  private async waitDomainForgotten(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    try {
      while ((await this.conn.lookup(this.domain)) !== undefined) {
        if (Date.now() > deadline) {
          this.log.warn({ domain: this.domain }, 'libvirt still lists the domain after its QEMU ended');
          return;
        }
        await sleep(25);
      }
    } catch (e) {
      this.log.warn({ err: messageOf(e) }, 'could not ask libvirt whether the domain is gone');
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

  detach(): void {
    if (this.vmState !== 'running') return;
    clearInterval(this.pollTimer);
    this.qmpClient.removeAllListeners();
    this.qmpClient.close();
    this.console?.close();
    this.vmState = 'detached';
  }

  async destroy(opts: VmStopOptions = {}): Promise<void> {
    await this.stop(opts);
    removeRunFiles(this.paths, { keepLogs: false, removeDir: true });
  }

  // ---------------------------------------------------------------- disks

  /** Hot-plugs a disk over podvisor's QMP monitor, onto the virtio-scsi controller libvirt made. */
  async hotplugDisk(req: HotplugDiskRequest): Promise<DiskAddress> {
    this.assertRunning('hot-plug a disk');
    return this.diskSet.plug(this.qmpClient, req);
  }

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

/** The QEMU libvirt started for this run directory: the process whose argv has podvisor's QMP socket. */
async function findQemuPid(paths: RunDirPaths, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      if (looksLikeOurQemu(pid, paths) && isProcessAlive(pid)) return pid;
    }
    if (Date.now() > deadline) throw internal(`libvirt started the domain but no QEMU process serves ${paths.qmpSocket}`);
    await sleep(50);
  }
}

/** The run directory's live files (sockets, record, disk list) once the domain is gone; logs stay. */
function forget(paths: RunDirPaths): void {
  removeRunFiles(paths, { keepLogs: true, removeDir: false });
  rmSync(join(paths.dir, RECORD_FILE), { force: true });
}
