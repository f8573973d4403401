import { readdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { failedPrecondition, internal, isPodvisorError, messageOf, notFound, unimplemented } from '../../errors.js';
import { logger } from '../../log.js';
import { HostTapMove, newHostTapName, removeHostTap } from '../../network/host-tap.js';
import { readJsonFile, writeJsonAtomicSync } from '../../util/atomic-file.js';
import type { ConsoleLog } from '../console-log.js';
import { withDeadline } from '../deadline.js';
import { removeVmCgroupSoon } from '../cgroup.js';
import type { QemuIdentity, QemuUsers } from '../confinement.js';
import { DiskSet } from '../disks.js';
import { diskOpenerFor } from '../file-grant.js';
import { hostTscKhz, resolveAccel } from '../host.js';
import { isProcessAlive, readCmdline, readProcStat } from '../proc.js';
import { validateProfile } from '../profile.js';
import type { PodVm, PodVmLaunchOptions } from '../pod-vm.js';
import { QmpClient } from '../qmp-client.js';
import { checkVmId, DEFAULT_CONSOLE_MAX_BYTES, lockSocketsAndOpenConsole, QmpVm, reconnectMonitors, warnIfEmulated } from '../qmp-vm.js';
import { prepareRunDir, removeRunFiles, type RunDirPaths } from '../run-dir.js';
import type { LibvirtConnection } from './binding.js';
import { buildDomainXml, domainName } from './domain-xml.js';
import { limitDomainQemu } from './domain-limits.js';
import { grantStart, libvirtRunPaths, type GrantedStart } from './qemu-access.js';

/**
 * A pod VM run by libvirt: a transient domain per sandbox (gone from libvirt when its QEMU
 * ends), so `virsh list` shows it. Its QEMU runs as a uid of its own from podvisor's
 * allocator (the QEMU backend's range), which libvirt sets before QEMU starts, with what it
 * opens handed over by podvisord (./qemu-access.ts), and inside the QEMU backend's memory and
 * pids limits (./domain-limits.ts). libvirtd may restart under it: the domain, and podvisor's
 * own QMP monitor on it, keep running.
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
  /** The uid and gid the domain's QEMU runs as. */
  uid?: number;
  gid?: number;
  /** Cgroup directories podvisor made for the limits (libvirt's own go with the domain). */
  cgroups?: string[];
  /** The pod tap's host-side name, recorded before it exists: a launch cut short leaves it to remove. */
  hostTap?: string;
}

const RECORD_FILE = 'libvirt-domain.json';
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
    users?: QemuUsers,
  ) {
    super({
      id: record.id, pid: record.pid, startTime: record.startTime, accel: record.accel, paths, qmp, diskSet, console,
      log: logger('vm-libvirt', { sandbox: record.id, domain: record.domain, pid: record.pid }),
      uid: record.uid, users, cgroups: record.cgroups,
    });
    this.domain = record.domain;
  }

  // ---------------------------------------------------------------- launch

  static async launch(conn: LibvirtConnection, opts: PodVmLaunchOptions): Promise<LibvirtVm> {
    checkVmId(opts.id);
    validateProfile(opts.profile);
    if ((opts.netns === undefined) !== (opts.tap === undefined)) {
      throw unimplemented('the libvirt VM backend starts QEMU in the host network namespace: it takes a pod netns only together with the tap ' +
        'it brings into it, and never a tap of the host netns');
    }
    if (opts.incomingDefer) throw unimplemented('the libvirt VM backend cannot restore a VM template (incoming migration); use the qemu backend');
    const jail = opts.confinement;
    if (!jail) {
      throw failedPrecondition("the libvirt VM backend runs each pod's QEMU as its own uid from [vm] qemu_user's range; this launch came without those settings");
    }
    const paths = libvirtRunPaths(opts.runDir);
    const accel = await resolveAccel(opts.profile.accel);
    const name = domainName(opts.id);
    const consoleMaxBytes = opts.consoleMaxBytes ?? DEFAULT_CONSOLE_MAX_BYTES;
    const log = logger('vm-libvirt', { sandbox: opts.id, domain: name });
    const runAs: QemuIdentity = jail.users.allocate(opts.id);
    let createdDir: boolean;
    try {
      createdDir = prepareRunDir(paths);
    } catch (e) {
      jail.users.release(runAs.uid);
      throw e;
    }
    // libvirtd opens the tap in the host netns under a name podvisor picks; it then moves into the pod netns.
    const tap = opts.tap && opts.netns !== undefined ? new HostTapMove(newHostTapName(), opts.netns, opts.tap.name, opts.tap.handoff) : undefined;
    const recordFile = join(paths.dir, RECORD_FILE);
    const record: LibvirtVmRecord = {
      id: opts.id, domain: name, pid: 0, startTime: '', accel, launchedAt: new Date().toISOString(), state: 'launching', consoleMaxBytes,
      uid: runAs.uid, gid: runAs.gid, cgroups: [], ...(tap ? { hostTap: tap.hostName } : {}),
    };
    let granted: GrantedStart | undefined;
    let qmp: QmpClient | undefined;
    let consoleLog: ConsoleLog | undefined;
    let vm: LibvirtVm;
    try {
      // Before the domain exists: a daemon that dies from here on leaves a record that says to destroy it.
      writeJsonAtomicSync(recordFile, record);
      warnIfEmulated(accel, log);
      log.info({ accel, machine: opts.profile.machine, vcpus: opts.profile.vcpus, memoryMiB: opts.profile.memoryMiB, uri: conn.uri, uid: runAs.uid }, 'creating libvirt domain');
      granted = await grantStart(runAs, { profile: opts.profile, paths, sharedFs: opts.sharedFs });
      const xml = buildDomainXml({
        name, profile: granted.profile, paths: granted.paths, accel, tscKhz: opts.profile.tscKhz ?? hostTscKhz(), sharedFs: granted.sharedFs, runAs,
        ...(tap ? { tap: { name: tap.hostName, mac: opts.tap?.mac } } : {}),
      });
      log.debug({ xml }, 'domain XML');
      await tap?.create(paths.dir);
      const dom = await conn.createXML(xml);
      // libvirtd handed QEMU the open tap; that fd keeps working once the link is in the pod netns.
      await tap?.moveIn();
      // QEMU has opened everything it was handed: from here it reaches none of those paths.
      granted.done();
      record.uuid = await conn.uuid(dom).catch(() => undefined);
      const pid = await findDomainQemu(name, PID_LOOKUP_MS);
      const stat = readProcStat(pid);
      if (!stat) throw internal(`QEMU pid ${pid} of domain ${name} vanished`);
      if (jail.cgroupParent) {
        record.cgroups = limitDomainQemu(pid, {
          parent: jail.cgroupParent, id: opts.id,
          limits: { memoryBytes: (opts.profile.memoryMiB + jail.overheadMiB) * 1024 * 1024, pidsMax: jail.pidsMax },
        });
      }
      qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: opts.startTimeoutMs ?? 30_000 });
      consoleLog = await lockSocketsAndOpenConsole(paths, consoleMaxBytes);
      Object.assign(record, { pid, startTime: stat.startTime, state: 'running' });
      writeJsonAtomicSync(recordFile, record);
      vm = new LibvirtVm(conn, record, paths, qmp, DiskSet.create(paths.disksFile, diskOpenerFor(runAs)), consoleLog, jail.users);
      const status = await qmp.execute('query-status');
      vm.log.info({ status: status.status, uuid: record.uuid }, 'libvirt domain is up');
    } catch (e) {
      granted?.done();
      qmp?.close();
      consoleLog?.close();
      await conn.destroy(name).catch((err) => log.warn({ err: messageOf(err) }, 'could not destroy the half-started domain'));
      await tap?.undo(e).catch((err) => log.warn({ err: messageOf(err), tap: tap.hostName }, 'could not remove the pod tap'));
      removeVmCgroupSoon(record.cgroups ?? []);
      jail.users.release(runAs.uid);
      forget(paths);
      removeRunFiles(paths, { keepLogs: false, removeDir: createdDir });
      log.warn({ err: messageOf(e) }, 'VM launch failed');
      if (isPodvisorError(e)) throw e;
      throw failedPrecondition(`VM ${opts.id} failed to start under libvirt: ${messageOf(e)}`, e);
    }
    await vm.finishLaunch(opts.waitReady, { readyTimeoutMs: opts.readyTimeoutMs, removeDir: createdDir });
    return vm;
  }

  // ---------------------------------------------------------------- reattach

  /** Finds the domain an earlier podvisord started for `runDir` through libvirt, and takes it back. */
  static async reattach(conn: LibvirtConnection, runDir: string, opts: { timeoutMs?: number; users?: QemuUsers } = {}): Promise<LibvirtVm> {
    const paths = libvirtRunPaths(runDir);
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
      removeVmCgroupSoon(record.cgroups ?? []);
      throw notFound(`VM ${record.id} is not running: libvirt has no running domain ${record.domain}${state ? ` (${state})` : ''}`);
    }
    // The same QEMU, or libvirt's answer is stale: the pid (with its start time) must still be that domain's.
    const pid = isProcessAlive(record.pid, record.startTime) && isDomainQemu(record.pid, record.domain)
      ? record.pid
      : await findDomainQemu(record.domain, 2000);
    const stat = readProcStat(pid);
    const monitors = await reconnectMonitors(paths, {
      consoleMaxBytes: record.consoleMaxBytes, timeoutMs: opts.timeoutMs, log: logger('vm-libvirt', { sandbox: record.id }),
    });
    return QmpVm.adopt(monitors, { record, users: opts.users }, (runAs) => new LibvirtVm(
      conn, { ...record, pid, startTime: stat?.startTime ?? record.startTime }, paths, monitors.qmp,
      DiskSet.load(paths.disksFile, diskOpenerFor(runAs)), monitors.console, opts.users,
    ), 'reattached to the libvirt domain', { libvirtState: state });
  }

  /** Destroys the domain that serves `runDir`, by its record or else by the sandbox id the directory is named after. */
  static async killLeftover(conn: LibvirtConnection, runDir: string): Promise<boolean> {
    const paths = libvirtRunPaths(runDir);
    const record = readJsonFile<LibvirtVmRecord>(join(paths.dir, RECORD_FILE));
    const name = record?.domain ?? domainName(basename(runDir));
    const ended = await conn.destroy(name);
    // A launch cut short before the tap reached the pod netns left it in the host's (the pod netns goes with the pod network).
    if (record?.hostTap && await removeHostTap(record.hostTap)) logger('vm-libvirt').warn({ tap: record.hostTap, runDir }, 'removed a host tap left by a cut-short launch');
    if (ended) logger('vm-libvirt').warn({ domain: name, runDir }, 'destroyed a libvirt domain that could not be reattached');
    forget(paths);
    removeVmCgroupSoon(record?.cgroups ?? []);
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
    forget(libvirtRunPaths(this.paths.dir));
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

/** The QEMU of domain `name`: libvirt names the guest in its argv (`-name guest=<name>,...`). */
async function findDomainQemu(name: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      if (isDomainQemu(pid, name) && isProcessAlive(pid)) return pid;
    }
    if (Date.now() > deadline) throw internal(`libvirt started domain ${name} but no QEMU process runs it`);
    await sleep(50);
  }
}

/** The pid is the QEMU of domain `name` (not a recycled pid). */
function isDomainQemu(pid: number, name: string): boolean {
  const argv = readCmdline(pid);
  if (!argv || !basename(argv[0] ?? '').startsWith('qemu-system')) return false;
  const i = argv.indexOf('-name');
  return i >= 0 && (argv[i + 1] ?? '').startsWith(`guest=${name},`);
}

/** The run directory's live files (sockets, record, disk list) once the domain is gone; logs stay. */
function forget(paths: RunDirPaths & { qemuDir: string }): void {
  removeRunFiles(paths, { keepLogs: true, removeDir: false });
  rmSync(paths.qemuDir, { recursive: true, force: true });
  rmSync(join(paths.dir, RECORD_FILE), { force: true });
}
