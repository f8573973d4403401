import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from '../src/errors.js';
import type {
  ContainerInfo, ContainerStatsResponse, CreateContainerRequest, DeleteContainerRequest, ExecProcessRequest, ProcessRef, SignalProcessRequest,
  UpdateContainerResourcesRequest,
} from '../src/agent-protocol/types.js';
import { logger } from '../src/log.js';
import type { EventHub } from './events.js';
import { GuestProcess, type ExitStatus } from './process.js';
import { run } from './run.js';
import { ensurePodPidNamespace } from './pod-pid-namespace.js';
import { GUEST_POD_PID_NAMESPACE } from '../src/agent-protocol/guest-paths.js';
import { redeliverOnceHandled, signalDisposition } from './signal-redelivery.js';
import { createBindTargets } from './mount-targets.js';
import { applyRecursiveReadOnly } from './recursive-readonly.js';
import { mergeResources, ociResources, readLimits, type OciResources } from './resources.js';
import { cgroupStats, flatKeyed } from './stats.js';
import { upperUsage } from './storage.js';
import { checkGuestPath, checkId } from './validate.js';

const log = logger('agent-containers');
const BUNDLES = '/run/podvisor/bundles';
const SIGKILL = 9;
const SIGSTOP = 19;
const CGROUP_ROOT = '/sys/fs/cgroup';
/** Every container gets /podvisor/<id> (all its processes) with crun's cgroup /podvisor/<id>/c below it. */
const CGROUP_PARENT = 'podvisor';

interface OciSpec {
  ociVersion?: string;
  process?: { terminal?: boolean; args?: string[]; env?: string[]; cwd?: string; user?: { uid: number; gid: number; additionalGids?: number[] }; consoleSize?: { height: number; width: number } } & Record<string, unknown>;
  root?: { path?: string; readonly?: boolean };
  linux?: { cgroupsPath?: string; resources?: OciResources } & Record<string, unknown>;
  [key: string]: unknown;
}

class Container {
  init: GuestProcess | undefined;
  readonly execs = new Map<string, GuestProcess>();
  constructor(readonly id: string, readonly bundle: string, readonly spec: OciSpec, readonly stdin: boolean) {}
  get groupDir(): string { return `${CGROUP_ROOT}/${CGROUP_PARENT}/${this.id}`; }
  get limitDir(): string { return `${this.groupDir}/c`; }
  get state(): ContainerInfo['state'] {
    if (!this.init) return 'created';
    return this.init.running ? 'running' : 'stopped';
  }
  oomKills(): number {
    try {
      return flatKeyed(readFileSync(`${this.groupDir}/memory.events`, 'utf8')).get('oom_kill') ?? 0;
    } catch {
      return 0;
    }
  }
}

/** Containers in this guest, run with crun from OCI specs the host sends. */
export class ContainerManager {
  private readonly containers = new Map<string, Container>();

  constructor(private readonly hub: EventHub) {}

  async create(req: CreateContainerRequest): Promise<void> {
    const id = checkId('container id', req.containerId);
    if (this.containers.has(id)) throw alreadyExists(`container ${id} already exists in the guest`);
    let spec: OciSpec;
    try {
      spec = JSON.parse(Buffer.from(req.ociSpecJson).toString('utf8')) as OciSpec;
    } catch (err) {
      throw invalidArgument(`container ${id}: the OCI spec is not JSON: ${(err as Error).message}`);
    }
    if (typeof spec !== 'object' || spec === null || !spec.process?.args?.length) throw invalidArgument(`container ${id}: the OCI spec needs process.args`);
    const rootPath = checkGuestPath('root.path', spec.root?.path ?? '');
    if (!existsSync(rootPath)) throw failedPrecondition(`container ${id}: root ${rootPath} does not exist in the guest (mount its image first)`);
    const bundle = `${BUNDLES}/${id}`;
    applyRecursiveReadOnly(spec as Parameters<typeof applyRecursiveReadOnly>[0]);
    spec.linux = { ...(spec.linux ?? {}), cgroupsPath: `/${CGROUP_PARENT}/${id}/c` };
    const namespaces = (spec.linux.namespaces ?? []) as Array<{ type: string; path?: string }>;
    if (namespaces.some((n) => n.type === 'user')) createBindTargets(rootPath, (spec.mounts ?? []) as Parameters<typeof createBindTargets>[1]);
    if (namespaces.some((n) => n.type === 'pid' && n.path === GUEST_POD_PID_NAMESPACE)) await ensurePodPidNamespace();
    await mkdir(bundle, { recursive: true, mode: 0o700 });
    await writeFile(`${bundle}/config.json`, JSON.stringify(spec));
    await this.prepareCgroup(id);
    this.containers.set(id, new Container(id, bundle, spec, !!req.stdin));
    log.info({ containerId: id, root: rootPath, tty: !!spec.process.terminal }, 'container created');
  }

  async start(containerId: string): Promise<number> {
    const c = this.get(containerId);
    if (c.init) throw failedPrecondition(`container ${c.id} was already started (${c.state})`);
    c.init = new GuestProcess({
      containerId: c.id,
      execId: '',
      crunArgs: ['run', '--bundle', c.bundle, '--pid-file', `${c.bundle}/init.pid`, c.id],
      cwd: c.bundle,
      pidFile: `${c.bundle}/init.pid`,
      stdin: c.stdin,
      tty: !!c.spec.process?.terminal,
      hub: this.hub,
      oomKills: () => c.oomKills(),
    });
    const pid = await c.init.started();
    if (!pid) {
      const status = await c.init.exited;
      throw failedPrecondition(`container ${c.id} did not start (crun exited with ${status.exitCode}): ${c.init.stderrHead.trim() || 'no error output'}`);
    }
    return pid;
  }

  async exec(req: ExecProcessRequest): Promise<number> {
    const c = this.get(req.containerId);
    const execId = checkId('exec id', req.execId);
    if (c.state !== 'running') throw failedPrecondition(`container ${c.id} is ${c.state}, not running`);
    if (c.execs.get(execId)?.running) throw alreadyExists(`exec ${execId} is already running in container ${c.id}`);
    if (!req.args?.length) throw invalidArgument('exec needs args');
    const base = c.spec.process ?? {};
    const proc = {
      ...base,
      args: req.args,
      env: req.env?.length ? req.env : base.env,
      cwd: req.cwd || base.cwd || '/',
      user: req.user ? { uid: req.user.uid, gid: req.user.gid, additionalGids: req.user.additionalGids } : base.user,
      terminal: !!req.tty,
      ...(req.tty && req.ttySize?.rows ? { consoleSize: { height: req.ttySize.rows, width: req.ttySize.cols } } : {}),
    };
    const dir = `${c.bundle}/exec-${execId}`;
    await mkdir(dir, { recursive: true });
    await rm(`${dir}/pid`, { force: true });
    await rm(`${dir}/pid.status`, { force: true });
    await writeFile(`${dir}/process.json`, JSON.stringify(proc));
    const p = new GuestProcess({
      containerId: c.id,
      execId,
      crunArgs: ['exec', '--process', `${dir}/process.json`, '--pid-file', `${dir}/pid`, c.id],
      cwd: dir,
      pidFile: `${dir}/pid`,
      stdin: !!req.stdin,
      tty: !!req.tty,
      hub: this.hub,
      oomKills: () => c.oomKills(),
    });
    c.execs.set(execId, p);
    const pid = await p.started();
    if (!pid) {
      const status = await p.exited;
      throw failedPrecondition(`exec ${execId} in container ${c.id} did not start (crun exited with ${status.exitCode}): ${p.stderrHead.trim() || 'no error output'}`);
    }
    return pid;
  }

  async signal(req: SignalProcessRequest): Promise<void> {
    const c = this.get(req.containerId);
    if (!req.signal || req.signal > 64) throw invalidArgument(`signal ${req.signal} is not a signal number`);
    let send: () => Promise<void>;
    if (req.all && !req.execId) {
      if (c.state !== 'running') throw failedPrecondition(`container ${c.id} is ${c.state}, not running`);
      send = () => run('crun', ['kill', '--all', c.id, String(req.signal)], { what: `signalling container ${c.id}`, code: 'FAILED_PRECONDITION' }).then(() => undefined);
    } else {
      const target = this.process(req);
      send = async () => target.signal(req.signal);
    }
    await send();
    // Only the container's first process is a namespace init, whose unhandled signals the kernel drops.
    const pid = c.init?.pid;
    if (!req.execId && pid && req.signal !== SIGKILL && req.signal !== SIGSTOP && signalDisposition(pid, req.signal) === 'default') {
      void redeliverOnceHandled(pid, req.signal, send, { until: c.init!.exited }).catch((e: Error) => log.warn({ container: c.id, err: e.message }, 'signal redelivery failed'));
    }
  }

  wait(ref: ProcessRef): Promise<ExitStatus> {
    return this.process(ref).exited;
  }

  writeStdin(ref: ProcessRef, data: Uint8Array): Promise<number> {
    return this.process(ref).writeStdin(data);
  }

  closeStdin(ref: ProcessRef): void {
    this.process(ref).closeStdin();
  }

  resize(ref: ProcessRef, rows: number, cols: number): Promise<void> {
    if (!rows || !cols || rows > 10000 || cols > 10000) throw invalidArgument(`tty size ${rows}x${cols} is not valid`);
    return this.process(ref).resize(rows, cols);
  }

  pauseOutput(ref: ProcessRef, paused: boolean): void {
    this.process(ref).pauseOutput(paused);
  }

  stats(containerId: string): ContainerStatsResponse {
    const c = this.get(containerId);
    const writableLayer = c.spec.root?.path ? upperUsage(c.spec.root.path) : undefined;
    return { ...cgroupStats(c.groupDir, c.limitDir), ...(writableLayer ? { writableLayer } : {}) };
  }

  /**
   * New cgroup limits for a container, in place: `crun update` on a running
   * one (never a restart), the spec on disk for one not started yet. Answers
   * the limit files as the kernel now has them.
   */
  async updateResources(req: UpdateContainerResourcesRequest): Promise<Record<string, string>> {
    const c = this.get(req.containerId);
    const update = ociResources(req.resources ?? {});
    const linux = (c.spec.linux ??= {});
    if (c.state === 'stopped') throw failedPrecondition(`container ${c.id} has exited; its resources cannot change`);
    if (c.state === 'running') {
      const file = `${c.bundle}/resources-update.json`;
      await writeFile(file, JSON.stringify(update));
      try {
        await run('crun', ['update', '--resources', file, c.id], { what: `updating the resources of container ${c.id}`, code: 'FAILED_PRECONDITION' });
      } finally {
        await rm(file, { force: true });
      }
    }
    // Kept in the spec too: a later exec reads it, and a created container starts with it.
    linux.resources = mergeResources(linux.resources, update);
    if (c.state === 'created') await writeFile(`${c.bundle}/config.json`, JSON.stringify(c.spec));
    const limits = readLimits(c.limitDir);
    log.info({ containerId: c.id, limits }, 'container resources updated');
    return limits;
  }

  /** The pod cgroup: every container's processes, none of the agent's. */
  sandboxStats(): ContainerStatsResponse {
    const pod = `${CGROUP_ROOT}/${CGROUP_PARENT}`;
    return cgroupStats(pod, pod);
  }

  list(): ContainerInfo[] {
    return [...this.containers.values()].map((c) => ({ containerId: c.id, state: c.state, pid: c.init?.pid ?? 0, exitCode: c.init?.exitStatus?.exitCode ?? 0 }));
  }

  async delete(req: DeleteContainerRequest): Promise<void> {
    const c = this.containers.get(req.containerId);
    if (!c) return; // deleting twice is not an error
    if (c.state === 'running') {
      if (!req.force) throw failedPrecondition(`container ${c.id} is still running; stop it first or delete with force`);
      await run('crun', ['kill', '--all', c.id, 'KILL']).catch(() => undefined);
      await c.init!.exited;
    }
    for (const e of c.execs.values()) if (e.running) await e.exited;
    // crun run removes its own state when the process ends; this covers a crun that died first.
    await run('crun', ['delete', '--force', c.id]).catch(() => undefined);
    await rm(c.bundle, { recursive: true, force: true });
    await rmdir(c.limitDir).catch(() => undefined);
    await rmdir(c.groupDir).catch((err) => log.warn({ containerId: c.id, err: (err as Error).message }, 'cgroup not removed'));
    this.containers.delete(c.id);
    log.info({ containerId: c.id }, 'container deleted');
  }

  /**
   * SIGKILLs every process of every container at once (shutdown): one write to the pod cgroup's
   * cgroup.kill. Nothing is deleted: the VM powers off next, and bundles, overlays and crun's state
   * all live in guest RAM. (Deleting each container with a `crun delete` took seconds under TCG and
   * pushed the agent's Shutdown past the host's graceful phase.)
   */
  killAll(): void {
    try {
      writeFileSync(`${CGROUP_ROOT}/${CGROUP_PARENT}/cgroup.kill`, '1');
    } catch (err) {
      // ENOENT: no container was ever created in this VM.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err: (err as Error).message }, 'cannot kill the pod cgroup');
    }
  }

  private get(containerId: string): Container {
    const c = this.containers.get(containerId);
    if (!c) throw notFound(`no container ${JSON.stringify(containerId)} in the guest`);
    return c;
  }

  private process(ref: ProcessRef): GuestProcess {
    const c = this.get(ref.containerId);
    if (!ref.execId) {
      if (!c.init) throw failedPrecondition(`container ${c.id} has not been started`);
      return c.init;
    }
    const p = c.execs.get(ref.execId);
    if (!p) throw notFound(`no exec ${JSON.stringify(ref.execId)} in container ${c.id}`);
    return p;
  }

  private async prepareCgroup(id: string): Promise<void> {
    const parent = `${CGROUP_ROOT}/${CGROUP_PARENT}`;
    await mkdir(`${parent}/${id}`, { recursive: true });
    // Delegate every controller down to crun's leaf so it can apply the spec's limits.
    const controllers = readFileSync(`${parent}/cgroup.controllers`, 'utf8').trim().split(/\s+/).filter(Boolean);
    const enable = controllers.map((c) => `+${c}`).join(' ');
    for (const dir of [parent, `${parent}/${id}`]) {
      await writeFile(`${dir}/cgroup.subtree_control`, enable).catch((err) => log.warn({ dir, err: (err as Error).message }, 'cannot enable controllers'));
    }
  }
}
