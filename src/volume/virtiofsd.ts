import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { failedPrecondition } from '../errors.js';
import { isProcessAlive, readCmdline, readProcStat } from '../vm/proc.js';

/**
 * The virtio-fs helper: QEMU 7.2's C virtiofsd, one per sandbox, serving the
 * sandbox's shared directory over a vhost-user socket.
 *
 * Confinement (the arguments are fixed here; nothing from a pod reaches them):
 * - `sandbox=namespace`: its own mount, PID and network namespaces, pivot_root
 *   into the shared directory, so no other host path exists for it;
 * - its built-in seccomp allow-list (always on in this virtiofsd);
 * - capabilities cut to what serving files needs: no mknod (no device nodes
 *   created on the host), no setfcap;
 * - no xattrs (no security.* attributes written on the host), no locks.
 * It runs as root because it must create files with the guest's owners; the
 * share's mounts add nosuid and nodev on the host side.
 * It exits by itself when QEMU closes the socket.
 */

export const VIRTIOFSD_BINARY = '/usr/lib/qemu/virtiofsd';
/** How long virtiofsd may take to listen. */
const START_TIMEOUT_MS = 10_000;

/**
 * Cache mode, chosen by measurement (README, Volumes): `auto` keeps attributes
 * and names for 1 s, so a configMap update is seen within about a second, and
 * repeated reads are served from the guest's page cache.
 */
export const VIRTIOFS_CACHE = 'auto';

export interface VirtiofsdHandle {
  pid: number;
  /** /proc start time, so a recycled pid is never taken for this helper. */
  startTime: string;
}

export function virtiofsdArgs(opts: { socket: string; source: string }): string[] {
  return [
    `--socket-path=${opts.socket}`,
    '-o', `source=${opts.source}`,
    '-o', 'sandbox=namespace',
    '-o', `cache=${VIRTIOFS_CACHE}`,
    '-o', 'no_xattr',
    '-o', 'no_posix_lock',
    '-o', 'no_flock',
    '-o', 'modcaps=-mknod:-setfcap',
    '-o', 'log_level=warn',
  ];
}

export function virtiofsdAvailable(): boolean {
  return existsSync(VIRTIOFSD_BINARY);
}

/** Starts virtiofsd detached (it outlives podvisord, like the VM) and waits for its socket. */
export async function startVirtiofsd(opts: { socket: string; source: string; logFile: string }): Promise<VirtiofsdHandle> {
  const out = openSync(opts.logFile, 'a', 0o600);
  const child = spawn(VIRTIOFSD_BINARY, virtiofsdArgs(opts), { detached: true, stdio: ['ignore', out, out] });
  closeSync(out);
  child.unref();
  let exited: string | undefined;
  child.once('exit', (code, signal) => { exited = signal ?? `code ${code}`; });
  child.once('error', (e) => { exited = e.message; });
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!existsSync(opts.socket) && exited === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  const pid = child.pid;
  if (exited !== undefined || pid === undefined || !existsSync(opts.socket)) {
    if (pid !== undefined && exited === undefined) child.kill('SIGKILL');
    throw failedPrecondition(`virtiofsd did not start (${exited ?? 'no socket within 10 s'}): ${logTail(opts.logFile)}`);
  }
  return { pid, startTime: readProcStat(pid)?.startTime ?? '' };
}

/** Whether the helper is still this virtiofsd (pid alive, same start, same binary). */
export function isVirtiofsdAlive(h: VirtiofsdHandle): boolean {
  return isProcessAlive(h.pid, h.startTime || undefined) && readCmdline(h.pid)?.[0] === VIRTIOFSD_BINARY;
}

/** SIGTERM, then SIGKILL; never signals a pid that is no longer this helper. */
export async function stopVirtiofsd(h: VirtiofsdHandle): Promise<void> {
  for (const [signal, waitMs] of [['SIGTERM', 2000], ['SIGKILL', 5000]] as const) {
    if (!isVirtiofsdAlive(h)) return;
    try {
      process.kill(h.pid, signal);
    } catch {
      return;
    }
    const until = Date.now() + waitMs;
    while (isVirtiofsdAlive(h) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  }
  if (isVirtiofsdAlive(h)) throw failedPrecondition(`virtiofsd ${h.pid} did not exit after SIGKILL`);
}

function logTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').slice(-2000).trim() || '(no output)';
  } catch {
    return '(no log)';
  }
}
