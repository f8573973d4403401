import { mkdir, rm } from 'node:fs/promises';
import { alreadyExists, invalidArgument, notFound, resourceExhausted } from '../src/errors.js';
import type { ProcessRef, SignalProcessRequest, StartGuestShellRequest } from '../src/agent-protocol/types.js';
import { GUEST_SHELL_CONTAINER_ID } from '../src/agent-protocol/guest-paths.js';
import { logger } from '../src/log.js';
import type { EventHub } from './events.js';
import { GuestProcess, type ExitStatus } from './process.js';
import { checkId } from './validate.js';

const log = logger('agent-guest-shell');
const SHELLS_DIR = '/run/podvisor/guest-shells';
/** Debug shells are for a person at a terminal: a few at once is plenty, and the bound keeps a host bug from forking the guest to death. */
const MAX_LIVE_SHELLS = 8;
/** Exited shells kept so a late WaitProcess still gets the status. */
const KEEP_EXITED = 16;

/**
 * Interactive shells in the VM itself (the guest's root namespaces, outside
 * every container), for operators debugging a sandbox. podvisord starts one
 * only when its [debug] table enables it; each runs busybox sh on a pty.
 */
export class GuestShells {
  private readonly shells = new Map<string, GuestProcess>();

  constructor(private readonly hub: EventHub) {}

  async start(req: StartGuestShellRequest): Promise<number> {
    const execId = checkId('exec id', req.execId);
    if (this.shells.get(execId)?.running) throw alreadyExists(`guest shell ${execId} is already running`);
    const live = [...this.shells.values()].filter((p) => p.running).length;
    if (live >= MAX_LIVE_SHELLS) throw resourceExhausted(`${live} guest shells are already open (at most ${MAX_LIVE_SHELLS})`);
    const term = req.term || 'xterm';
    if (!/^[A-Za-z0-9._+-]{1,64}$/.test(term)) throw invalidArgument(`TERM ${JSON.stringify(term)} is not a terminal name`);
    const dir = `${SHELLS_DIR}/${execId}`;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await rm(`${dir}/pid`, { force: true });
    await rm(`${dir}/pid.status`, { force: true });
    const rows = req.ttySize?.rows || 24;
    const cols = req.ttySize?.cols || 80;
    // The shell writes its own pid (resize and signals go to it, not to script) and sizes its pty before it starts.
    const setup = `echo $$ > ${dir}/pid; stty rows ${rows} cols ${cols} 2>/dev/null; cd /; exec /bin/sh -i`;
    const proc = new GuestProcess({
      containerId: GUEST_SHELL_CONTAINER_ID,
      execId,
      crunArgs: [],
      command: ['/bin/sh', '-c', setup],
      env: { TERM: term, HOME: '/', PS1: 'podvisor-guest# ', PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' },
      cwd: dir,
      pidFile: `${dir}/pid`,
      stdin: true,
      tty: true,
      hub: this.hub,
      oomKills: () => 0,
    });
    this.shells.set(execId, proc);
    this.forgetOldExited();
    const pid = await proc.started();
    if (!pid) throw invalidArgument(`guest shell ${execId} did not start: ${proc.stderrHead.trim() || 'no error output'}`);
    log.info({ execId, pid }, 'guest shell started');
    void proc.exited.then((s) => {
      log.info({ execId, exitCode: s.exitCode }, 'guest shell ended');
      return rm(dir, { recursive: true, force: true });
    });
    return pid;
  }

  owns(ref: ProcessRef): boolean {
    return ref.containerId === GUEST_SHELL_CONTAINER_ID;
  }

  wait(ref: ProcessRef): Promise<ExitStatus> { return this.get(ref).exited; }
  writeStdin(ref: ProcessRef, data: Uint8Array): Promise<number> { return this.get(ref).writeStdin(data); }
  closeStdin(ref: ProcessRef): void { this.get(ref).closeStdin(); }
  signal(req: SignalProcessRequest): void {
    if (!req.signal || req.signal > 64) throw invalidArgument(`signal ${req.signal} is not a signal number`);
    this.get(req).signal(req.signal);
  }
  pauseOutput(ref: ProcessRef, paused: boolean): void { this.get(ref).pauseOutput(paused); }
  resize(ref: ProcessRef, rows: number, cols: number): Promise<void> {
    if (!rows || !cols || rows > 10000 || cols > 10000) throw invalidArgument(`tty size ${rows}x${cols} is not valid`);
    return this.get(ref).resize(rows, cols);
  }

  /** Ends every shell (agent shutdown). */
  killAll(): void {
    for (const p of this.shells.values()) if (p.running && p.pid) p.signal(9);
  }

  private get(ref: ProcessRef): GuestProcess {
    const p = this.shells.get(ref.execId ?? '');
    if (!p) throw notFound(`no guest shell ${JSON.stringify(ref.execId ?? '')}`);
    return p;
  }

  private forgetOldExited(): void {
    const exited = [...this.shells.entries()].filter(([, p]) => !p.running);
    for (const [id] of exited.slice(0, Math.max(0, exited.length - KEEP_EXITED))) this.shells.delete(id);
  }
}
