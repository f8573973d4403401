import { chmodSync, readdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { failedPrecondition, internal, invalidArgument, isPodvisorError, messageOf, notFound, unimplemented } from '../../errors.js';
import { logger } from '../../log.js';
import { readJsonFile, writeJsonAtomicSync } from '../../util/atomic-file.js';
import { ConsoleLog } from '../console-log.js';
import { withDeadline } from '../deadline.js';
import { DiskSet } from '../disks.js';
import { hostTscKhz, resolveAccel } from '../host.js';
import { isProcessAlive, readProcStat } from '../proc.js';
import { validateProfile } from '../profile.js';
import type { PodVm, PodVmLaunchOptions } from '../pod-vm.js';
import { QmpClient } from '../qmp-client.js';
import { DEFAULT_CONSOLE_MAX_BYTES, QmpVm, reconnectMonitors } from '../qmp-vm.js';
import { looksLikeOurQemu, prepareRunDir, removeRunFiles, runDirPaths, type RunDirPaths } from '../run-dir.js';
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
/** Each stop phase's deadline when QEMU paused the VM on an error (libvirt's destroy takes longer than a QMP quit). */
const FATAL_STOP_PHASE_MS = 2000;
const PID_LOOKUP_MS = 10_000;

export class LibvirtVm extends QmpVm implements PodVm {
  readonly domain: string;
  protected readonly endingQemu = 'destroying the domain';
  protected readonly fatalStopPhaseMs = FATAL_STOP_PHASE_MS;

  private constructor(
    private readonly conn: LibvirtConnection,
    record: LibvirtVmRecord,
    paths: RunDirPaths,
    qmp: QmpClient,
    diskSet: DiskSet,
    console?: ConsoleLog,
  ) {
    super({
      id: record.id, pid: record.pid, startTime: record.startTime, accel: record.accel, paths, qmp, diskSet, console,
      log: logger('vm-libvirt', { sandbox: record.id, domain: record.domain, pid: record.pid }),
    });
    this.domain = record.domain;
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
    await vm.finishLaunch(opts.waitReady, { readyTimeoutMs: opts.readyTimeoutMs, removeDir: createdDir });
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
    const { qmp, console: consoleLog } = await reconnectMonitors(paths, {
      consoleMaxBytes: record.consoleMaxBytes, timeoutMs: opts.timeoutMs, log: logger('vm-libvirt', { sandbox: record.id }),
    });
    const vm = new LibvirtVm(conn, { ...record, pid, startTime: stat?.startTime ?? record.startTime }, paths, qmp, DiskSet.load(paths.disksFile), consoleLog);
    await vm.resumeWatching('reattached to the libvirt domain', { libvirtState: state });
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

  // ---------------------------------------------------------------- watching and stopping

  protected override describeQemu(): string {
    return `QEMU pid ${this.pid} of domain ${this.domain}`;
  }

  protected override howQemuEnded(stoppedByPodvisor: boolean): string {
    return stoppedByPodvisor ? 'libvirt destroyed the domain' : `killed, or domain ${this.domain} destroyed outside podvisor`;
  }

  protected override releaseAfterExit(): void {
    forget(this.paths);
  }

  /** libvirt's destroy; with libvirtd unreachable, QMP quit (the stop then goes on to SIGKILL). */
  protected override async endQemu(phaseMs: number): Promise<void> {
    try {
      await withDeadline(this.conn.destroy(this.domain), phaseMs, `libvirt did not destroy domain ${this.domain} within ${phaseMs} ms`);
    } catch (e) {
      this.log.warn({ err: messageOf(e) }, 'libvirt destroy failed; quitting QEMU over QMP');
      await this.quitOverQmp(phaseMs);
    }
  }

  /**
   * A QEMU that ended by itself (the guest's shutdown) is gone before libvirtd has read its
   * monitor's EOF and dropped the transient domain; a stopped pod must not still show in
   * `virsh list`, so wait (bounded) for libvirt to forget it too.
   */
  protected override async afterStopped(timeoutMs: number): Promise<void> {
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
