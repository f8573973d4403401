import { randomBytes } from 'node:crypto';
import { GUEST_SHELL_CONTAINER_ID } from '../agent-protocol/guest-paths.js';
import { failedPrecondition, invalidArgument, notFound } from '../errors.js';
import { openInteractive, type InteractiveProcess, type OutputListener } from './interactive-process.js';
import { resolveIdPrefix } from './ids.js';
import type { PodContext, SandboxRuntime } from './pod-context.js';
import type { ContainerRecord, SandboxRecord } from './records.js';

/**
 * What the operator tools (the podvisor CLI through the admin socket, the SSH
 * debug gateway) reach in the pod module: sandboxes found the way a person
 * names them, their live VM, and interactive processes in them. Kubelet's
 * paths never come through here.
 */
export class OperatorAccess {
  constructor(private readonly ctx: PodContext) {}

  /**
   * A sandbox by full id or unique id prefix, `namespace/name`, or a pod name
   * that only one namespace uses. Among attempts of one pod the ready one (then
   * the newest) wins, as a person means the pod that runs now.
   */
  findSandbox(query: string): SandboxRecord {
    if (query === '') throw invalidArgument('no sandbox named: give an id prefix, namespace/name or a pod name');
    const all = this.ctx.index.allSandboxes();
    const byId = resolveIdPrefix(query, all.map((s) => s.id), 'sandbox');
    if (byId !== undefined) return this.ctx.index.sandbox(byId);
    const slash = query.indexOf('/');
    const [namespace, name] = slash >= 0 ? [query.slice(0, slash), query.slice(slash + 1)] : [undefined, query];
    const matches = all.filter((s) => s.config.metadata.name === name && (namespace === undefined || s.config.metadata.namespace === namespace));
    if (matches.length === 0) throw notFound(`no sandbox matches "${query}" (an id prefix, namespace/name or pod name)`);
    const namespaces = new Set(matches.map((s) => s.config.metadata.namespace));
    if (namespaces.size > 1) {
      throw invalidArgument(`pod name "${name}" is used in several namespaces (${[...namespaces].sort().join(', ')}): say namespace/${name}`);
    }
    return matches.sort((a, b) => rank(b) - rank(a) || newer(a.createdAt, b.createdAt))[0]!;
  }

  sandboxes(): SandboxRecord[] {
    return this.ctx.index.allSandboxes();
  }

  containersOf(sandboxId: string): ContainerRecord[] {
    return this.ctx.index.containersOf(sandboxId);
  }

  /** The live VM and agent of a sandbox, or undefined when it is not running. */
  runtime(sandboxId: string): SandboxRuntime | undefined {
    return this.ctx.runtimes.get(sandboxId);
  }

  /**
   * A container for exec and cp: a container id (prefix), or a sandbox query
   * with the container's name (`-c`), or a sandbox with one running container.
   */
  findContainer(query: string, name?: string): ContainerRecord {
    if (name === undefined) {
      const id = /^[0-9a-f]+$/.test(query) ? resolveIdPrefix(query, this.ctx.index.allContainers().map((c) => c.id), 'container') : undefined;
      if (id !== undefined) return this.ctx.index.container(id);
    }
    const sandbox = this.findSandbox(query);
    const containers = this.ctx.index.containersOf(sandbox.id);
    if (name !== undefined) {
      const named = containers.filter((c) => c.config.metadata.name === name).sort((a, b) => newer(a.createdAt, b.createdAt));
      const found = named.find((c) => c.state === 'running') ?? named[0];
      if (!found) throw notFound(`sandbox ${sandbox.id.slice(0, 12)} has no container named "${name}" (it has: ${names(containers)})`);
      return found;
    }
    const running = containers.filter((c) => c.state === 'running');
    if (running.length === 1) return running[0]!;
    if (running.length === 0) throw failedPrecondition(`sandbox ${sandbox.id.slice(0, 12)} has no running container`);
    throw invalidArgument(`sandbox ${sandbox.id.slice(0, 12)} runs several containers (${names(running)}): choose one with -c NAME`);
  }

  /** A process in a running container, driven by the caller. */
  async exec(
    container: ContainerRecord,
    req: { argv: string[]; tty: boolean; stdin: boolean; rows?: number; cols?: number; onOutput: OutputListener },
  ): Promise<InteractiveProcess> {
    if (container.state !== 'running') throw failedPrecondition(`container ${container.id.slice(0, 12)} is ${container.state}, not running`);
    if (req.argv.length === 0) throw invalidArgument('exec needs a command');
    const { agent } = this.liveRuntime(container.sandboxId);
    const ref = { containerId: container.id, execId: `op-${randomBytes(8).toString('hex')}` };
    const ttySize = size(req);
    return openInteractive(agent, ref, req.onOutput, () =>
      agent.startExec({ ...ref, argv: req.argv, tty: req.tty, stdin: req.stdin, ...(ttySize ? { ttySize } : {}) }));
  }

  /** A shell in the sandbox VM itself (not in a container). The caller checks that debug access is enabled. */
  async guestShell(sandbox: SandboxRecord, req: { rows?: number; cols?: number; term?: string; onOutput: OutputListener }): Promise<InteractiveProcess> {
    const { agent } = this.liveRuntime(sandbox.id);
    const ref = { containerId: GUEST_SHELL_CONTAINER_ID, execId: `shell-${randomBytes(8).toString('hex')}` };
    const ttySize = size(req);
    return openInteractive(agent, ref, req.onOutput, () =>
      agent.startGuestShell({ execId: ref.execId, ...(ttySize ? { ttySize } : {}), ...(req.term ? { term: req.term } : {}) }));
  }

  private liveRuntime(sandboxId: string): SandboxRuntime {
    const rt = this.ctx.runtimes.get(sandboxId);
    if (!rt) throw failedPrecondition(`sandbox ${sandboxId.slice(0, 12)} has no running VM`);
    return rt;
  }
}

function size(req: { rows?: number; cols?: number }): { rows: number; cols: number } | undefined {
  return req.rows && req.cols ? { rows: req.rows, cols: req.cols } : undefined;
}

function rank(s: SandboxRecord): number {
  return s.state === 'ready' ? 1 : 0;
}

/** Sort order: the newer of two creation times (decimal nanosecond strings) first. */
function newer(a: string, b: string): number {
  const d = BigInt(b) - BigInt(a);
  return d > 0n ? 1 : d < 0n ? -1 : 0;
}

function names(cs: ContainerRecord[]): string {
  return cs.map((c) => c.config.metadata.name).join(', ') || 'none';
}
