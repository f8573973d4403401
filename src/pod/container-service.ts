import { isAbsolute, join, normalize } from 'node:path';
import {
  deadlineExceeded, failedPrecondition, invalidArgument, messageOf, notFound, unimplemented,
} from '../errors.js';
import { SandboxShare } from '../volume/sandbox-share.js';
import type { ShareVolume } from '../volume/share-dir.js';
import { missingSubPath, ociVolumeMount, type OciMount } from './volume-mounts.js';
import { logger } from '../log.js';
import { nowNanos, type Nanos } from './clock.js';
import { CriLogWriter } from './cri-log-writer.js';
import { filterContainers, type ContainerFilter } from './filters.js';
import type { GuestExit } from './guest-agent.js';
import { newId } from './ids.js';
import { buildOciSpec, containerUserRequest, validateContainerConfig } from './oci-spec.js';
import type { PodContext, SandboxRuntime } from './pod-context.js';
import { containerNameKey } from './pod-index.js';
import type { ContainerConfig, ContainerRecord, PluggedImage, SandboxRecord } from './records.js';
import { parseStopSignal, SIGKILL } from './signals.js';
import { loadContainerSeccomp } from './seccomp.js';
import { assertContainerMove } from './state-machine.js';
import { timerMs } from './timers.js';
import { resolveUser } from './user.js';
import { GUEST_POD_PID_NAMESPACE } from '../agent-protocol/guest-paths.js';

const log = logger('pod-containers');

/** How long to wait for a container to die after SIGKILL before giving up on it. */
const KILL_WAIT_MS = 15_000;
/** How long an exit waits for the container's volumes to be written back (copy share mode). */
const VOLUME_FLUSH_MS = 10_000;

/** Why a container stopped, in the words kubelet expects in ContainerStatus.reason. */
export function exitReason(exitCode: number, oomKilled: boolean): string {
  if (oomKilled) return 'OOMKilled';
  return exitCode === 0 ? 'Completed' : 'Error';
}

/**
 * Containers inside sandbox VMs: create (image disk, OCI spec, agent), start
 * (logs), stop (signal, timeout, SIGKILL), remove, status, list, exec, reopen
 * log. Exits reported by the agent land in `recordExit`.
 */
export class ContainerService {
  /** Containers between the StartContainer call and the agent's answer, whose exit may arrive first. */
  private readonly starting = new Map<string, GuestExit | null>();
  /** Containers whose exit is being recorded (their log is being flushed). */
  private readonly exiting = new Set<string>();

  constructor(private readonly ctx: PodContext) {}

  // ---------------------------------------------------------------- create

  async create(sandboxQuery: string, config: ContainerConfig): Promise<string> {
    const sandbox = this.ctx.index.sandbox(sandboxQuery);
    return this.ctx.locks.run(sandbox.id, () => this.createLocked(sandbox, config));
  }

  private async createLocked(sandbox: SandboxRecord, config: ContainerConfig): Promise<string> {
    if (sandbox.state !== 'ready') {
      throw failedPrecondition(`sandbox ${sandbox.id} is not ready (${sandbox.notReadyReason ?? 'it was stopped'}); containers cannot be created in it`);
    }
    validateContainerConfig(config);
    const seccomp = await loadContainerSeccomp(config);
    const logFile = containerLogFile(sandbox, config);
    const image = await this.ctx.images.find(config.image);
    if (!image) throw notFound(`image "${config.image}" is not present on this node; pull it first (PullImage / crictl pull)`);
    const stopSignal = parseStopSignal(config.stopSignal ?? image.config.StopSignal);
    const rt = this.runtimeOf(sandbox);

    const id = newId();
    const nameKey = containerNameKey(sandbox.id, config.metadata);
    this.ctx.index.reserveName(nameKey, id, 'container');
    let createdInGuest = false;
    let undoVolumes = false;
    try {
      const plugged = await this.ensureImagePlugged(sandbox, rt, image.id);
      const userRequest = containerUserRequest(config, image.config);
      // Always consulted, numeric uid or not: the passwd entry gives the primary
      // gid and /etc/group the groups that list the user, as runc does.
      const [passwd, group] = await Promise.all([
        rt.agent.readImageFile(plugged.guestMountPoint, '/etc/passwd'),
        rt.agent.readImageFile(plugged.guestMountPoint, '/etc/group'),
      ]);
      const user = resolveUser(userRequest, passwd ?? '', group ?? '');
      const volumes = await this.prepareVolumes(sandbox, rt, id, config);
      undoVolumes = true;
      const spec = buildOciSpec({
        containerId: id,
        config,
        sandbox: sandbox.config,
        image: image.config,
        user,
        rootfsPath: rt.agent.containerRootfs(id),
        sandboxFiles: sandbox.guestFiles,
        cgroupsPath: `/podvisor/${id}`,
        pidNamespacePath: this.pidNamespaceToJoin(sandbox, config),
        seccomp,
        volumes,
      });
      await rt.agent.createContainer({
        containerId: id, spec, imageMountPoint: plugged.guestMountPoint, stdin: config.stdin, stdinOnce: config.stdinOnce, tty: config.tty,
      });
      createdInGuest = true;
      const record: ContainerRecord = {
        id,
        sandboxId: sandbox.id,
        config,
        state: 'created',
        createdAt: nowNanos(),
        imageId: image.id,
        imageRef: image.repoDigests[0] ?? image.id,
        logFile,
        stopSignal,
        user: { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids },
      };
      await this.ctx.store.saveContainer(record);
      this.ctx.index.addContainer(record);
      this.ctx.events.publish({ containerId: id, sandboxId: sandbox.id, type: 'created', createdAt: record.createdAt });
      log.info({ container: id, sandbox: sandbox.id, name: config.metadata.name, image: config.image }, 'container created');
      return id;
    } catch (e) {
      this.ctx.index.releaseName(nameKey, id);
      if (createdInGuest) await rt.agent.deleteContainer(id).catch((err) => log.warn({ container: id, err: messageOf(err) }, 'cleanup after failed create'));
      if (undoVolumes) await rt.share?.removeContainer(id).catch((err) => log.warn({ container: id, err: messageOf(err) }, 'volume cleanup after failed create'));
      throw e;
    }
  }

  /** The PID namespace a container joins: another container's for TARGET (ephemeral containers). */
  private pidNamespaceToJoin(sandbox: SandboxRecord, config: ContainerConfig): string | undefined {
    const ns = config.security.namespaceOptions;
    if (ns.pid === 'POD') return GUEST_POD_PID_NAMESPACE;
    if (ns.pid !== 'TARGET') return undefined;
    const target = this.ctx.index.findContainer(ns.targetId);
    if (!target || target.sandboxId !== sandbox.id) {
      throw notFound(`PID namespace target container "${ns.targetId}" is not in sandbox ${sandbox.id}`);
    }
    if (target.state !== 'running' || target.guestPid === undefined) {
      throw failedPrecondition(`PID namespace target container ${target.id} is not running`);
    }
    return `/proc/${target.guestPid}/ns/pid`;
  }

  /**
   * The container's CRI mounts as guest bind mounts: host sources are bound
   * into the sandbox share (as the container's own entries, removed with it),
   * image volumes come from the image's disk, plugged like a rootfs image.
   */
  private async prepareVolumes(sandbox: SandboxRecord, rt: SandboxRuntime, containerId: string, config: ContainerConfig): Promise<OciMount[]> {
    const sources: Array<string | undefined> = [];
    const hostVolumes: Array<{ index: number; vol: ShareVolume }> = [];
    for (const [index, m] of config.mounts.entries()) {
      if (m.image) {
        const image = await this.ctx.images.find(m.image);
        if (!image) throw notFound(`image volume ${m.image} for ${m.containerPath} is not present on this node; pull it first`);
        // An image without layers has no disk to plug; nothing else may stand in for it.
        if (!image.layerCount) throw invalidArgument(`image volume ${m.image} for ${m.containerPath} has no layers, so nothing to mount`);
        const plugged = await this.ensureImagePlugged(sandbox, rt, image.id);
        const source = await rt.agent.resolveImagePath(plugged.guestMountPoint, `/${m.imageSubPath ?? ''}`);
        if (!source) throw missingSubPath(m);
        sources.push(source);
        continue;
      }
      if (!rt.share) {
        throw unimplemented(`mount ${m.hostPath} -> ${m.containerPath}: sandbox ${sandbox.id} has no volume share ` +
          `(${SandboxShare.available() ? 'it was made without one' : 'virtiofsd is not installed on this node'})`);
      }
      sources.push(undefined);
      hostVolumes.push({ index, vol: {
        hostPath: m.hostPath,
        readonly: m.readonly,
        recursiveReadOnly: !!m.recursiveReadOnly,
        propagation: m.propagation === 'HOST_TO_CONTAINER' ? 'host-to-container' : 'private',
      } });
    }
    // All host volumes of the container in one call: the share batches its host work.
    const shared = rt.share && hostVolumes.length > 0 ? await rt.share.addVolumes(containerId, hostVolumes) : [];
    hostVolumes.forEach(({ index }, i) => { sources[index] = shared[i]; });
    return config.mounts.map((m, index) => ociVolumeMount({ mount: m, guestSource: sources[index]! }));
  }

  /**
   * One disk per image per sandbox: the first container using an image plugs
   * its erofs disk and has the agent mount it; later ones (and concurrent ones)
   * share that mount, each with its own overlay.
   */
  private ensureImagePlugged(sandbox: SandboxRecord, rt: SandboxRuntime, imageId: string): Promise<PluggedImage> {
    const known = sandbox.images.find((p) => p.imageId === imageId);
    if (known) return Promise.resolve(known);
    let pending = rt.imagePlugs.get(imageId);
    if (!pending) {
      pending = (async () => {
        const path = await this.ctx.images.ensureDisk(imageId);
        const diskId = `img-${imageId.replace(/^sha256:/, '').slice(0, 16)}`;
        const address = await rt.vm.hotplugDisk({ id: diskId, path, readOnly: true });
        try {
          const { mountPoint } = await rt.agent.mountImage({ imageId, serial: address.serial });
          const plugged: PluggedImage = { imageId, diskId, serial: address.serial, guestMountPoint: mountPoint };
          sandbox.images.push(plugged);
          await this.ctx.store.saveSandbox(sandbox);
          return plugged;
        } catch (e) {
          await rt.vm.unplugDisk(diskId).catch(() => undefined);
          throw e;
        }
      })();
      rt.imagePlugs.set(imageId, pending);
      pending.catch(() => rt.imagePlugs.delete(imageId));
    }
    return pending;
  }

  // ---------------------------------------------------------------- start

  async start(query: string): Promise<void> {
    const c = this.ctx.index.container(query);
    await this.ctx.locks.run(c.id, async () => {
      assertContainerMove(c.id, c.state, 'running', 'start');
      const sandbox = this.ctx.index.sandbox(c.sandboxId);
      if (sandbox.state !== 'ready') throw failedPrecondition(`sandbox ${sandbox.id} is not ready; cannot start container ${c.id}`);
      const rt = this.runtimeOf(sandbox);
      if (c.logFile) await this.openLog(c);
      this.starting.set(c.id, null);
      let pid: number;
      try {
        ({ pid } = await rt.agent.startContainer(c.id));
      } catch (e) {
        this.starting.delete(c.id);
        await this.closeLog(c.id);
        throw e;
      }
      c.state = 'running';
      c.startedAt = nowNanos();
      c.guestPid = pid;
      try {
        await this.ctx.store.saveContainer(c);
      } finally {
        // Until STARTED is out, an exit that arrives waits its turn (events must come in order).
        this.ctx.events.publish({ containerId: c.id, sandboxId: c.sandboxId, type: 'started', createdAt: c.startedAt });
        log.info({ container: c.id }, 'container started');
        const earlyExit = this.starting.get(c.id);
        this.starting.delete(c.id);
        if (earlyExit) await this.recordExit(earlyExit);
      }
    });
  }

  async openLog(c: ContainerRecord): Promise<void> {
    if (this.ctx.logWriters.has(c.id) || !c.logFile) return;
    this.ctx.logWriters.set(c.id, await CriLogWriter.open(c.logFile, { throttle: this.ctx.outputThrottle(c.sandboxId) }));
  }

  private async closeLog(id: string): Promise<void> {
    const w = this.ctx.logWriters.get(id);
    this.ctx.logWriters.delete(id);
    await w?.close().catch((e) => log.warn({ container: id, err: messageOf(e) }, 'closing container log failed'));
  }

  /**
   * Output from the agent; the container's log writer adds the CRI framing.
   * Nothing is written for a container already recorded EXITED: kubelet no
   * longer rotates its log, so a guest could otherwise grow it without bound (H3).
   */
  handleOutput(ev: { containerId: string; stream: 'stdout' | 'stderr'; data: Uint8Array }): void {
    if (this.ctx.index.containerById(ev.containerId)?.state === 'exited') return;
    this.ctx.logWriters.get(ev.containerId)?.write(ev.stream, ev.data);
  }

  // ---------------------------------------------------------------- exits

  /**
   * The agent says a container's process ended. `live` exits are stamped with
   * the host's clock when they arrive; an exit found during recovery happened
   * while nobody listened, so the guest's own time is the better guess.
   */
  async recordExit(exit: GuestExit, live = true): Promise<void> {
    if (this.starting.has(exit.containerId)) {
      // StartContainer has not returned yet: finish the start first, then record the exit.
      this.starting.set(exit.containerId, exit);
      return;
    }
    const c = this.ctx.index.containerById(exit.containerId);
    if (!c || c.state === 'exited') return;
    await this.flushVolumes(c);
    await this.markExited(c, { exitCode: exit.exitCode, reason: exitReason(exit.exitCode, exit.oomKilled), finishedAt: finishedTime(c, exit, live) });
  }

  /**
   * Before EXITED is reported, the host has what the container wrote to its
   * volumes (copy mode writes back asynchronously; kubelet reads the
   * termination log as soon as it sees EXITED). Bounded: a stuck guest delays
   * the exit by VOLUME_FLUSH_MS at most.
   */
  private async flushVolumes(c: ContainerRecord): Promise<void> {
    const share = this.ctx.runtimes.get(c.sandboxId)?.share;
    if (!share || !c.config.mounts.some((m) => !m.image)) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => { timer = setTimeout(resolve, VOLUME_FLUSH_MS); });
    await Promise.race([share.flush(c.id), deadline])
      .catch((e) => log.warn({ container: c.id, err: messageOf(e) }, 'volumes not written back before the exit'))
      .finally(() => clearTimeout(timer));
  }

  /** Moves a container to EXITED (from an agent exit, a VM death, or recovery), persists it and tells everyone. */
  async markExited(c: ContainerRecord, how: { exitCode: number; reason: string; message?: string; finishedAt?: Nanos }): Promise<void> {
    if (c.state === 'exited' || this.exiting.has(c.id)) return;
    this.exiting.add(c.id);
    try {
      // The agent sends a process's last output before its exit: once the log has it, EXITED means the log is complete.
      // Closing writes the unfinished lines; nothing more is written to an EXITED container's log (H3).
      await this.closeLog(c.id);
      c.state = 'exited';
      c.exitCode = how.exitCode;
      c.reason = how.reason;
      if (how.message) c.message = how.message;
      c.finishedAt = how.finishedAt ?? nowNanos();
      c.guestPid = undefined;
    } finally {
      this.exiting.delete(c.id);
    }
    try {
      await this.ctx.store.saveContainer(c);
    } catch (e) {
      log.error({ container: c.id, err: messageOf(e) }, 'cannot persist container exit');
    }
    this.ctx.events.publish({ containerId: c.id, sandboxId: c.sandboxId, type: 'stopped', createdAt: c.finishedAt });
    this.ctx.exits.emit(`exited:${c.id}`);
    log.info({ container: c.id, exitCode: c.exitCode, reason: c.reason }, 'container exited');
  }

  private waitExited(c: ContainerRecord, timeoutMs: number): Promise<boolean> {
    if (c.state === 'exited') return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.ctx.exits.off(`exited:${c.id}`, onExit);
        resolve(ok);
      };
      const onExit = () => done(true);
      const timer = setTimeout(() => done(c.state === 'exited'), timeoutMs);
      this.ctx.exits.on(`exited:${c.id}`, onExit);
    });
  }

  // ---------------------------------------------------------------- stop / remove

  /** The image's stop signal, then SIGKILL after `timeoutSec`; a container that is not running is left as is. */
  async stop(query: string, timeoutSec: number): Promise<void> {
    const c = this.ctx.index.container(query);
    await this.ctx.locks.run(c.id, () => this.stopLocked(c, timeoutSec));
  }

  private async stopLocked(c: ContainerRecord, timeoutSec: number): Promise<void> {
    if (c.state !== 'running' && c.state !== 'unknown') return;
    const sandbox = this.ctx.index.sandbox(c.sandboxId);
    const rt = this.ctx.runtimes.get(sandbox.id);
    if (!rt) {
      // No VM any more: the process cannot be running.
      await this.markExited(c, { exitCode: 137, reason: 'Error', message: 'the pod VM is gone' });
      return;
    }
    if (timeoutSec > 0) {
      await this.signal(rt, c, c.stopSignal);
      if (await this.waitExited(c, timerMs(timeoutSec))) return;
      log.info({ container: c.id, timeoutSec }, 'container ignored its stop signal; killing it');
    }
    await this.signal(rt, c, SIGKILL);
    if (!(await this.waitExited(c, KILL_WAIT_MS))) {
      throw deadlineExceeded(`container ${c.id} did not exit within ${KILL_WAIT_MS / 1000} s of SIGKILL`);
    }
  }

  private async signal(rt: SandboxRuntime, c: ContainerRecord, signal: number): Promise<void> {
    try {
      await rt.agent.signalContainer(c.id, signal);
    } catch (e) {
      // The process may have exited between our check and the signal: ask the agent what is true now.
      const st = await rt.agent.containerState(c.id).catch(() => undefined);
      if (st?.status === 'exited') {
        await this.recordExit({ containerId: c.id, exitCode: st.exitCode, oomKilled: st.oomKilled, exitedAtMs: st.exitedAtMs });
        return;
      }
      if (st?.status === 'missing') {
        await this.markExited(c, { exitCode: 137, reason: 'Error', message: 'the agent no longer knows this container' });
        return;
      }
      throw e;
    }
  }

  /** Removes a container, force-stopping it first; removing an unknown container is not an error. */
  async remove(query: string): Promise<void> {
    const c = this.ctx.index.findContainer(query);
    if (!c) return;
    await this.ctx.locks.run(c.id, async () => {
      if (!this.ctx.index.findContainer(c.id)) return;
      if (c.state === 'running' || c.state === 'unknown') await this.stopLocked(c, 0);
      await this.forget(c, true);
    });
  }

  /** Drops a container from the guest (if its VM lives), the store and the index. */
  async forget(c: ContainerRecord, deleteInGuest: boolean): Promise<void> {
    const rt = this.ctx.runtimes.get(c.sandboxId);
    if (rt && deleteInGuest) await rt.agent.deleteContainer(c.id);
    if (rt?.share && c.config.mounts.some((m) => !m.image)) await rt.share.removeContainer(c.id);
    await this.closeLog(c.id);
    await this.ctx.store.removeContainer(c.sandboxId, c.id);
    this.ctx.index.deleteContainer(c.id);
    this.ctx.index.releaseName(containerNameKey(c.sandboxId, c.config.metadata), c.id);
    this.ctx.events.publish({ containerId: c.id, sandboxId: c.sandboxId, type: 'deleted', createdAt: nowNanos() });
    log.info({ container: c.id }, 'container removed');
  }

  // ---------------------------------------------------------------- queries

  status(query: string): ContainerRecord {
    return this.ctx.index.container(query);
  }

  list(filter: ContainerFilter): ContainerRecord[] {
    return filterContainers(this.ctx.index, filter);
  }

  // ---------------------------------------------------------------- exec / logs

  async execSync(query: string, argv: string[], timeoutSec: number): Promise<{ stdout: Buffer; stderr: Buffer; exitCode: number }> {
    const c = this.ctx.index.container(query);
    if (argv.length === 0) throw invalidArgument('ExecSync needs a command');
    if (c.state !== 'running') throw failedPrecondition(`container ${c.id} is ${c.state.toUpperCase()}, not RUNNING; cannot exec in it`);
    const rt = this.runtimeOf(this.ctx.index.sandbox(c.sandboxId));
    const res = await rt.agent.execSync({ containerId: c.id, argv, timeoutMs: timeoutSec > 0 ? timerMs(timeoutSec) : 0 });
    if (res.timedOut) throw deadlineExceeded(`command ${JSON.stringify(argv)} in container ${c.id} timed out after ${timeoutSec} s`);
    return { stdout: res.stdout, stderr: res.stderr, exitCode: res.exitCode };
  }

  /** kubelet rotated the log file (renamed it): write on in a new file at the same path. */
  async reopenLog(query: string): Promise<void> {
    const c = this.ctx.index.container(query);
    if (c.state !== 'running') throw failedPrecondition(`container ${c.id} is not running; its log is not open`);
    const w = this.ctx.logWriters.get(c.id);
    if (!w) throw failedPrecondition(`container ${c.id} has no log file (its sandbox has no log_directory or it has no log_path)`);
    await w.reopen();
  }

  runtimeOf(sandbox: SandboxRecord): SandboxRuntime {
    const rt = this.ctx.runtimes.get(sandbox.id);
    if (!rt) throw failedPrecondition(`sandbox ${sandbox.id} has no running VM`);
    return rt;
  }
}

/**
 * log_directory (sandbox) joined with log_path (container), as containerd
 * does; '' when there is no log path. Unlike a plain join, the result must stay
 * inside log_directory (M2): the directory is absolute and normalized, the
 * path relative without `..`, so a CRI client cannot make podvisord (root)
 * create or append to any other host file.
 */
export function containerLogFile(sandbox: SandboxRecord, config: ContainerConfig): string {
  if (config.logPath === '') return '';
  const dir = sandbox.config.logDirectory;
  if (dir === '') throw invalidArgument(`log path "${config.logPath}" needs the sandbox's log_directory, which is empty`);
  if (!isAbsolute(dir) || normalize(dir).replace(/\/$/, '') !== dir.replace(/\/$/, '')) {
    throw invalidArgument(`sandbox log_directory "${dir}" must be an absolute, normalized path`);
  }
  if (isAbsolute(config.logPath) || config.logPath.split('/').includes('..') || config.logPath.includes('\0')) {
    throw invalidArgument(`log path "${config.logPath}" must be relative to the sandbox's log_directory and must not contain ".."`);
  }
  const path = normalize(join(dir, config.logPath));
  if (!path.startsWith(dir.replace(/\/$/, '') + '/')) throw invalidArgument(`log path "${config.logPath}" leaves the sandbox's log_directory`);
  return path;
}

/**
 * The guest clock is set from the host's to the second only, so a guest
 * timestamp may fall before the container's recorded start; never report a
 * finish before the start.
 */
function finishedTime(c: ContainerRecord, exit: GuestExit, live: boolean): Nanos {
  if (live || !exit.exitedAtMs) return nowNanos();
  const guest = BigInt(Math.round(exit.exitedAtMs * 1000)) * 1000n;
  const floor = BigInt(c.startedAt ?? c.createdAt);
  return (guest > floor ? guest : floor).toString();
}
