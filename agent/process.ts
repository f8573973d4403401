import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { failedPrecondition, invalidArgument } from '../src/errors.js';
import { logger } from '../src/log.js';
import type { EventHub } from './events.js';
import { run, shellQuote } from './run.js';

const log = logger('agent-process');
/** How long a host's PauseOutput holds unless renewed. */
const HOST_PAUSE_MS = 30_000;
/** After an exit, how often the pipes are checked for output still coming (see drainThenReport). */
const OUTPUT_QUIET_MS = 10;
/**
 * The most an exit waits for its pipes to go quiet while output flows. Only a background
 * process that keeps writing reaches it (the exited process's own output is read in one loop
 * turn); it bounds what such a process can delay the exit by, and is the fixed wait the agent
 * had before, so no exit is reported later than it used to be.
 */
const OUTPUT_DRAIN_MAX_MS = 1000;

export interface ExitStatus {
  exitCode: number;
  oomKilled: boolean;
  exitedAtUnixNanos: number;
}

export interface GuestProcessOptions {
  containerId: string;
  /** '' for the container's init process. */
  execId: string;
  /** The crun command line (`run ...` or `exec ...`), which stays in the foreground. */
  crunArgs: string[];
  /** Runs this instead of crun (a debug shell in the guest itself); it must write its pid to pidFile. */
  command?: string[];
  /** Extra environment for the command (crun gets the process env from its spec). */
  env?: Record<string, string>;
  cwd: string;
  pidFile: string;
  stdin: boolean;
  tty: boolean;
  hub: EventHub;
  /** The container's cumulative OOM-kill counter, to tell whether this process died of OOM. */
  oomKills: () => number;
}

/**
 * One process in a container, run by a foreground crun (`crun run` for init,
 * `crun exec` for extra processes): crun's exit status is the process's, and
 * crun's stdio is the process's stdio (or the tty crun proxies). Output is
 * published as events; the exit event follows the last output.
 */
export class GuestProcess {
  readonly containerId: string;
  readonly execId: string;
  readonly tty: boolean;
  readonly exited: Promise<ExitStatus>;
  exitStatus: ExitStatus | undefined;
  /** The process's pid in the guest (not crun's), once crun has written it. */
  pid = 0;
  private readonly child: ChildProcess;
  private readonly oomAtStart: number;
  private readonly pidKnown: Promise<number>;
  private readonly outputs: NodeJS.ReadableStream[] = [];
  /** Set by the host while its streaming client is slow (see pauseOutput). */
  private hostPaused = false;
  private hostPauseTimer: NodeJS.Timeout | undefined;
  /** Bytes of output read so far; drainThenReport watches it to see the pipes go quiet. */
  private outputBytes = 0;

  constructor(private readonly opts: GuestProcessOptions) {
    this.containerId = opts.containerId;
    this.execId = opts.execId;
    this.tty = opts.tty;
    this.oomAtStart = opts.oomKills();
    const stdio: ['pipe' | 'ignore', 'pipe', 'pipe'] = [opts.stdin || opts.tty ? 'pipe' : 'ignore', 'pipe', 'pipe'];
    if (opts.tty) {
      // crun proxies a container's terminal only when its own stdin is a tty,
      // and Node cannot receive the pty master over --console-socket. So
      // util-linux `script` puts crun on a pty whose master is our pipes; crun
      // makes that outer pty raw and the container's pty does the terminal
      // work. crun's exit status also lands in a file, in case script's
      // own status (-e) is not the child's (it was killed, say).
      const command = this.argv().map(shellQuote).join(' ');
      this.child = spawn('script', ['-q', '-e', '-c', `${command}; echo $? > ${shellQuote(this.statusFile())}`, '/dev/null'], { cwd: opts.cwd, stdio, env: this.env() });
    } else {
      const [file, ...args] = this.argv();
      this.child = spawn(file!, args, { cwd: opts.cwd, stdio, env: this.env() });
    }
    this.child.stdin?.on('error', (err) => log.debug({ err: err.message, containerId: this.containerId, execId: this.execId }, 'stdin closed by the process'));
    this.pump('STDOUT', this.child.stdout!);
    this.pump('STDERR', this.child.stderr!);
    this.exited = new Promise((resolve) => {
      this.child.on('error', (err) => {
        log.error({ err: err.message }, 'cannot run crun');
        this.finish(resolve, 127);
      });
      const settle = (code: number | null, signal: NodeJS.Signals | null) => {
        let exitCode = code ?? 128 + (signal ? osConstants.signals[signal] : 0);
        if (opts.tty) {
          try {
            exitCode = Number(readFileSync(this.statusFile(), 'utf8').trim());
          } catch {
            // crun never ran to completion: keep script's status
          }
        }
        this.finish(resolve, exitCode);
      };
      // 'close' comes after the last output, so the exit event follows it. A
      // process the container left in the background (`sleep 100 &` in an exec)
      // may hold the pipes open, and then 'close' never comes: the exit is
      // reported once what was written before it has been read.
      this.child.on('close', settle);
      this.child.on('exit', (code, signal) => this.drainThenReport(() => settle(code, signal)));
    });
    this.pidKnown = this.waitForPid();
  }

  get running(): boolean {
    return this.exitStatus === undefined;
  }

  /** Resolves with the process pid once crun has started it (or 0 if it ended first). */
  started(): Promise<number> {
    return this.pidKnown;
  }

  async writeStdin(data: Uint8Array): Promise<number> {
    const stdin = this.child.stdin;
    if (!stdin) throw failedPrecondition(`${this.label()} was started without stdin`);
    if (stdin.destroyed || stdin.writableEnded) throw failedPrecondition(`stdin of ${this.label()} is closed`);
    await new Promise<void>((resolve, reject) => stdin.write(data, (err) => (err ? reject(failedPrecondition(`writing to ${this.label()}: ${err.message}`)) : resolve())));
    return data.length;
  }

  closeStdin(): void {
    this.child.stdin?.end();
  }

  signal(signal: number): void {
    if (!this.running) throw failedPrecondition(`${this.label()} has already exited`);
    if (!this.pid) throw failedPrecondition(`${this.label()} has not started yet`);
    try {
      process.kill(this.pid, signal);
    } catch (err) {
      throw invalidArgument(`cannot send signal ${signal} to ${this.label()}: ${(err as Error).message}`);
    }
  }

  /** Sets the window size on the process's terminal; the kernel sends it SIGWINCH. */
  async resize(rows: number, cols: number): Promise<void> {
    if (!this.tty) throw failedPrecondition(`${this.label()} has no tty`);
    if (!this.running) throw failedPrecondition(`${this.label()} has already exited`);
    const pid = await this.pidKnown;
    await run('stty', ['-F', `/proc/${pid}/fd/0`, 'rows', String(rows), 'cols', String(cols)], { what: `resizing the tty of ${this.label()}` });
  }

  /**
   * Holds the process's output back (it blocks on its pipe) while the host's
   * streaming client cannot keep up. A pause lapses after HOST_PAUSE_MS unless
   * renewed, so a host that went away never leaves a process blocked.
   */
  pauseOutput(paused: boolean): void {
    clearTimeout(this.hostPauseTimer);
    this.hostPaused = paused;
    if (paused) {
      this.hostPauseTimer = setTimeout(() => this.pauseOutput(false), HOST_PAUSE_MS).unref();
    } else {
      for (const source of this.outputs) source.resume();
    }
  }

  private argv(): string[] {
    return this.opts.command ?? ['crun', ...this.opts.crunArgs];
  }

  private env(): NodeJS.ProcessEnv {
    return this.opts.env ? { ...process.env, ...this.opts.env } : process.env;
  }

  private statusFile(): string {
    return `${this.opts.pidFile}.status`;
  }

  label(): string {
    if (!this.containerId) return `guest shell ${this.execId}`;
    return this.execId ? `exec ${this.execId} in container ${this.containerId}` : `container ${this.containerId}`;
  }

  /** The start of stderr: crun's own complaint when it cannot start the process. */
  stderrHead = '';

  private pump(stream: 'STDOUT' | 'STDERR', source: NodeJS.ReadableStream): void {
    this.outputs.push(source);
    source.on('data', (data: Buffer) => {
      this.outputBytes += data.length;
      if (stream === 'STDERR' && this.stderrHead.length < 2048) this.stderrHead += data.toString('utf8').slice(0, 2048);
      const { hub } = this.opts;
      hub.publish({ output: { containerId: this.containerId, execId: this.execId, stream, data } });
      // Backpressure: while the host cannot keep up the process blocks on its pipe.
      if (hub.congested) {
        source.pause();
        hub.once('drain', () => { if (!this.hostPaused) source.resume(); });
      } else if (this.hostPaused) {
        source.pause();
      }
    });
  }

  /** Takes the pid from crun's pid file; false while it is not written (or never was: crun failed). */
  private async readPidFile(): Promise<boolean> {
    try {
      const pid = Number((await readFile(this.opts.pidFile, 'utf8')).trim());
      if (pid > 0) {
        this.pid = pid;
        return true;
      }
    } catch {
      // not written yet
    }
    return false;
  }

  private async waitForPid(): Promise<number> {
    while (this.running) {
      if (await this.readPidFile()) return this.pid;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    // A short process in a busy guest can run to completion between two polls: its pid file says it started.
    if (await this.readPidFile()) return this.pid;
    return 0;
  }

  /**
   * Reports an exit whose pipes may stay open. What the process wrote before it exited is
   * already in the pipes (the kernel's buffers) and is read in the event loop's next poll
   * phase, so each check runs from setImmediate after a timer: a poll phase lies between the
   * two. The exit is reported at the first check that finds no new output, at most
   * OUTPUT_DRAIN_MAX_MS of flowing output after the exit; what a background process writes
   * after that follows the exit event. While output is held back (backpressure from the host)
   * nothing is read and the wait does not count: a host pause lapses by itself (pauseOutput).
   */
  private drainThenReport(report: () => void): void {
    let flowingMs = 0;
    let lastCheck = Date.now();
    let seen = this.outputBytes;
    const check = () => {
      if (this.exitStatus) return; // 'close' came first
      const now = Date.now();
      if (this.opts.hub.congested || this.hostPaused) {
        // Resumed sources are read in a later poll phase: the next check must not count as quiet.
        seen = -1;
        lastCheck = now;
        return later();
      }
      const quiet = this.outputBytes === seen;
      seen = this.outputBytes;
      flowingMs += now - lastCheck;
      lastCheck = now;
      if (quiet || flowingMs >= OUTPUT_DRAIN_MAX_MS) report();
      else later();
    };
    const later = () => setTimeout(() => setImmediate(check), OUTPUT_QUIET_MS).unref();
    later();
  }

  private finish(resolve: (s: ExitStatus) => void, exitCode: number): void {
    if (this.exitStatus) return;
    this.exitStatus = { exitCode, oomKilled: this.opts.oomKills() > this.oomAtStart, exitedAtUnixNanos: Date.now() * 1e6 };
    this.opts.hub.publish({ exit: { containerId: this.containerId, execId: this.execId, ...this.exitStatus } });
    log.info({ containerId: this.containerId, execId: this.execId, ...this.exitStatus }, 'process exited');
    resolve(this.exitStatus);
  }
}

