import { randomBytes } from 'node:crypto';
import { failedPrecondition, invalidArgument, unavailable } from '../errors.js';
import { logger } from '../log.js';
import type { AttachOptions, ExecOptions, PortConnection, ProcessIo, ProcessSink, StreamingBackend } from '../streaming/backend.js';
import type { GuestAgent } from './guest-agent.js';
import type { PodContext, SandboxRuntime } from './pod-context.js';
import type { ContainerRecord } from './records.js';

const log = logger('pod-streams');

/**
 * Exec, attach and port-forward sessions for the streaming server, on the
 * guest agent: an exec is a process of its own with its output routed to the
 * session; an attach joins the container's own process (its output still goes
 * to the CRI log too); a forwarded connection is dialled by the agent inside
 * the VM, so no pod network is needed.
 */
export class StreamService implements StreamingBackend {
  /** Containers whose stdin an attach with stdin_once has already closed. */
  private readonly stdinClosed = new Set<string>();

  constructor(private readonly ctx: PodContext) {}

  checkContainer(query: string): string {
    return this.runningContainer(query).id;
  }

  checkSandbox(query: string): string {
    const sandbox = this.ctx.index.sandbox(query);
    if (sandbox.state !== 'ready' || !this.ctx.runtimes.has(sandbox.id)) {
      throw failedPrecondition(`sandbox ${sandbox.id} is not ready (${sandbox.notReadyReason ?? 'it was stopped'}); cannot forward ports to it`);
    }
    return sandbox.id;
  }

  async exec(containerId: string, opts: ExecOptions, sink: ProcessSink): Promise<ProcessIo> {
    if (opts.cmd.length === 0) throw invalidArgument('exec needs a command');
    const c = this.runningContainer(containerId);
    const agent = this.agentOf(c);
    const execId = `exec-${randomBytes(8).toString('hex')}`;
    const io = new ProcessIoImpl(agent, c.id, execId, sink, true);
    try {
      await agent.startExec({ containerId: c.id, execId, argv: opts.cmd, tty: opts.tty, stdin: opts.stdin, ...(opts.ttySize ? { ttySize: opts.ttySize } : {}) });
    } catch (e) {
      io.unroute();
      throw e;
    }
    log.info({ container: c.id, execId, tty: opts.tty, stdin: opts.stdin }, 'exec session started');
    return io;
  }

  checkAttach(query: string, opts: AttachOptions): string {
    return this.attachable(query, opts).id;
  }

  async attach(containerId: string, opts: AttachOptions, sink: ProcessSink): Promise<ProcessIo> {
    const c = this.attachable(containerId, opts);
    const io = new ProcessIoImpl(this.agentOf(c), c.id, '', sink, false);
    io.onRelease = async () => {
      // stdin_once: the container's stdin closes when the first attach that used it detaches.
      if (opts.stdin && c.config.stdinOnce && !this.stdinClosed.has(c.id)) {
        this.stdinClosed.add(c.id);
        await this.agentOf(c).closeStdin(c.id, '').catch((e) => log.debug({ container: c.id, err: (e as Error).message }, 'closing stdin after attach'));
      }
    };
    // A container that has already exited (between the check and here) ends the session at once.
    const onExit = () => io.exitedWith(this.ctx.index.container(c.id).exitCode ?? 0);
    if (this.ctx.index.container(c.id).state === 'exited') onExit();
    else this.ctx.exits.once(`exited:${c.id}`, onExit);
    void io.exited.finally(() => this.ctx.exits.off(`exited:${c.id}`, onExit));
    return io;
  }

  async dialPort(sandboxId: string, port: number, onData: (data: Uint8Array) => void): Promise<PortConnection> {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalidArgument(`port ${port} is not a TCP port`);
    const id = this.checkSandbox(sandboxId);
    return this.ctx.runtimes.get(id)!.agent.dialPort(port, onData);
  }

  private attachable(query: string, opts: AttachOptions): ContainerRecord {
    const c = this.runningContainer(query);
    if (opts.stdin && !c.config.stdin) throw failedPrecondition(`container ${c.id} was created without stdin; attach with stdin is not possible`);
    // A tty setting different from the container's is not refused (containerd uses the container's):
    // the output simply arrives on the streams the client opened.
    return c;
  }

  private runningContainer(query: string): ContainerRecord {
    const c = this.ctx.index.container(query);
    if (c.state !== 'running') throw failedPrecondition(`container ${c.id} is ${c.state.toUpperCase()}, not RUNNING`);
    return c;
  }

  private agentOf(c: ContainerRecord): GuestAgent {
    const rt: SandboxRuntime | undefined = this.ctx.runtimes.get(c.sandboxId);
    if (!rt) throw failedPrecondition(`sandbox ${c.sandboxId} has no running VM`);
    return rt.agent;
  }

}

/** One session's view of a guest process. */
class ProcessIoImpl implements ProcessIo {
  readonly exited: Promise<number>;
  onRelease: (() => Promise<void>) | undefined;
  private resolveExit!: (code: number) => void;
  private rejectExit!: (err: Error) => void;
  private done = false;
  readonly unroute: () => void;

  constructor(private readonly agent: GuestAgent, private readonly containerId: string, private readonly execId: string, sink: ProcessSink, private readonly ownProcess: boolean) {
    this.exited = new Promise((resolve, reject) => { this.resolveExit = resolve; this.rejectExit = reject; });
    this.exited.catch(() => undefined); // the session reads it; this keeps an unread rejection quiet
    this.unroute = agent.routeProcess(containerId, execId, {
      output: (stream, data) => sink.output(stream, data),
      // Only an exec's own exit ends it here; an attach ends with the container's recorded exit.
      exit: (code) => { if (ownProcess) this.exitedWith(code); },
      gone: (reason) => {
        if (this.done) return;
        this.done = true;
        this.rejectExit(unavailable(reason));
      },
    });
  }

  exitedWith(code: number): void {
    if (this.done) return;
    this.done = true;
    this.resolveExit(code);
  }

  writeStdin(data: Uint8Array): Promise<void> {
    return this.agent.writeStdin(this.containerId, this.execId, data);
  }

  closeStdin(): Promise<void> {
    return this.agent.closeStdin(this.containerId, this.execId);
  }

  resize(size: { rows: number; cols: number }): Promise<void> {
    return this.agent.resizeTty(this.containerId, this.execId, size.rows, size.cols);
  }

  async pauseOutput(paused: boolean): Promise<boolean> {
    if (!this.ownProcess) return false;
    await this.agent.pauseProcessOutput(this.containerId, this.execId, paused);
    return true;
  }

  async release(): Promise<void> {
    this.unroute();
    if (this.ownProcess && !this.done) {
      // The client went away before the command ended: as containerd does, the exec does not outlive its session.
      await this.agent.killExec(this.containerId, this.execId).catch(() => undefined);
    }
    await this.onRelease?.();
  }
}
