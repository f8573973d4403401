import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { criClient, type CriClient } from '../../src/cri/client.js';
import { cleanupOnSignal } from './signal-cleanup.js';

export const REPO_ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const MAIN = join(REPO_ROOT, 'src/daemon/main.ts');

export interface DaemonOptions {
  /** TOML text written to a config file passed with --config. */
  config?: string;
  /** Reuse these folders (a restart test); defaults to a fresh temp folder. */
  dir?: string;
  extraArgs?: string[];
  logLevel?: string;
  /** How long podvisord may take to serve (default 30 s; a machine full of emulated VMs needs more). */
  startTimeoutMs?: number;
}

export interface RunningDaemon {
  dir: string;
  socket: string;
  root: string;
  state: string;
  proc: ChildProcess;
  client: CriClient;
  /** Everything the daemon printed so far. */
  output(): string;
  /** Waits for the process to exit; resolves with its exit code. */
  exited: Promise<number | null>;
  /** Sends a signal and waits for exit. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Stops (if running) and removes the temp folder. */
  dispose(): Promise<void>;
}

/** podvisord's command line for the given folders, so tests can run a second copy. */
export function daemonArgs(dir: string, opts: DaemonOptions = {}): string[] {
  const args = ['--import', 'tsx', MAIN, '--listen', join(dir, 'cri.sock'), '--root', join(dir, 'root'), '--state', join(dir, 'state')];
  args.push('--log-level', opts.logLevel ?? 'debug');
  if (opts.config !== undefined) {
    const file = join(dir, 'podvisor.toml');
    writeFileSync(file, opts.config);
    args.push('--config', file);
  }
  return args.concat(opts.extraArgs ?? []);
}

/**
 * Runs podvisord to completion (for start-up failures) and returns its exit code and output.
 * The bound only stops a daemon that never exits: as generous as startDaemon's, since loading
 * podvisord alone (a cold tsx cache on a loaded host) can take over 30 s before it even fails.
 */
export async function runDaemonToExit(dir: string, opts: DaemonOptions = {}, timeoutMs = 120_000): Promise<{ code: number | null; output: string }> {
  const proc = spawn(process.execPath, daemonArgs(dir, opts), { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout!.on('data', (d) => (output += d));
  proc.stderr!.on('data', (d) => (output += d));
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((r) => proc.on('exit', (c) => r(c)));
  clearTimeout(timer);
  return { code, output };
}

/** Starts a real podvisord on a socket in a temp folder and connects a real gRPC client to it. */
export async function startDaemon(opts: DaemonOptions = {}): Promise<RunningDaemon> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'pvd-'));
  const socket = join(dir, 'cri.sock');
  const proc = spawn(process.execPath, daemonArgs(dir, opts), { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.on('exit', (c) => r(c)));

  const deadline = Date.now() + (opts.startTimeoutMs ?? 120_000); // a cold tsx cache on a loaded host took over 30 s
  while (!out.includes('podvisord serving the CRI')) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      await exited;
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
      throw new Error(`podvisord did not start:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const client = criClient(socket);
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    return exited;
  };
  // Interrupted: the daemon and the VMs it started go (pods outlive a daemon on purpose otherwise).
  const forget = cleanupOnSignal(async () => {
    await stop('SIGKILL');
    killLeftoverVms(join(dir, 'state', 'vms'));
    if (!opts.dir) removeDaemonDir(dir);
  });
  void exited.then(forget);
  return {
    dir,
    socket,
    root: join(dir, 'root'),
    state: join(dir, 'state'),
    proc,
    client,
    output: () => out,
    exited,
    stop,
    async dispose() {
      client.close();
      await stop('SIGTERM');
      if (!opts.dir && existsSync(dir)) removeDaemonDir(dir);
    },
  };
}

export { unary } from '../../src/cri/client.js';

/** Kills QEMU processes whose pidfiles are under `vmsDir` (only VMs this test started). */
export function killLeftoverVms(vmsDir: string): number {
  let killed = 0;
  let entries: string[] = [];
  try {
    entries = readdirSync(vmsDir);
  } catch {
    return 0;
  }
  for (const id of entries) {
    try {
      const pid = Number(readFileSync(join(vmsDir, id, 'qemu.pid'), 'utf8').trim());
      if (pid > 0) {
        process.kill(pid, 'SIGKILL');
        killed++;
      }
    } catch {
      /* no pidfile or already gone */
    }
  }
  return killed;
}

/**
 * Removes a podvisord's test folder. A daemon killed with pods still up leaves their volume
 * shares mounted under it (binds of host folders), and a plain recursive remove would walk
 * into those binds and delete host files: so every mount under the folder goes first,
 * deepest first and lazily (a VM just killed may still hold one).
 */
export function removeDaemonDir(dir: string): void {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const mountsUnder = () =>
    readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((line) => line.split(' ')[4]?.replace(/\\040/g, ' '))
      .filter((m): m is string => !!m && (m === dir || m.startsWith(prefix)))
      .sort((a, b) => b.length - a.length);
  // Passes, because a mount stacked over another hides it until the upper one is gone.
  for (let pass = 0; pass < 5; pass++) {
    const mounts = mountsUnder();
    if (mounts.length === 0) break;
    for (const m of mounts) spawnSync('umount', ['-l', m], { stdio: 'ignore' });
  }
  rmSync(dir, { recursive: true, force: true });
}
