import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { alreadyExists, invalidArgument } from '../errors.js';
import { isProcessAlive, readCmdline } from './proc.js';
import { escapeOptionValue } from './qemu-option.js';

/**
 * The per-sandbox files on the host. None of these paths reaches the guest: the guest sees
 * only device names (the `podvisor.agent` port, SCSI serials), so a VM saved from one run
 * directory can be restored in another.
 */
export interface RunDirPaths {
  dir: string;
  qmpSocket: string;
  agentSocket: string;
  pidFile: string;
  /** The guest's serial console; kept after the VM stops, removed with the sandbox. */
  consoleLog: string;
  /** QEMU's own stdout/stderr; kept like the console log. */
  qemuLog: string;
  /** What the launcher knows about the process (pid, start time), for reattach. */
  stateFile: string;
  /** The hot-plugged disks, for reattach. */
  disksFile: string;
  /** Where a VM's state is streamed through while it is saved or restored (VM templates). */
  migrationSocket: string;
}

/** sun_path is 108 bytes including the NUL. */
const MAX_SOCKET_PATH = 107;

export function runDirPaths(dir: string): RunDirPaths {
  const paths: RunDirPaths = {
    dir,
    qmpSocket: join(dir, 'qmp.sock'),
    agentSocket: join(dir, 'agent.sock'),
    pidFile: join(dir, 'qemu.pid'),
    consoleLog: join(dir, 'console.log'),
    qemuLog: join(dir, 'qemu.log'),
    stateFile: join(dir, 'vm.json'),
    disksFile: join(dir, 'disks.json'),
    migrationSocket: join(dir, 'migration.sock'),
  };
  for (const s of [paths.qmpSocket, paths.agentSocket, paths.migrationSocket]) {
    if (Buffer.byteLength(s) > MAX_SOCKET_PATH) {
      throw invalidArgument(`VM run directory ${dir} is too long: socket path ${s} exceeds ${MAX_SOCKET_PATH} bytes`);
    }
  }
  return paths;
}

/** Files that only make sense while QEMU runs; removed when it is gone. */
export function transientFiles(p: RunDirPaths): string[] {
  return [p.qmpSocket, p.agentSocket, p.migrationSocket, p.pidFile, p.stateFile, p.disksFile];
}

/** Makes the run directory (0700) and refuses one that a live VM still uses. Returns whether it was created. */
export function prepareRunDir(paths: RunDirPaths): boolean {
  const created = !existsSync(paths.dir);
  mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
  chmodSync(paths.dir, 0o700);
  const pid = readPidFile(paths.pidFile);
  if (pid !== undefined && isProcessAlive(pid) && looksLikeOurQemu(pid, paths)) {
    throw alreadyExists(`a VM (QEMU pid ${pid}) is already running in ${paths.dir}`);
  }
  // Leftovers of a VM that died while nobody watched.
  removeRunFiles(paths, { keepLogs: true, removeDir: false });
  return created;
}

export function readPidFile(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The pid is a QEMU whose QMP socket is this run directory's: not a recycled pid. */
export function looksLikeOurQemu(pid: number, paths: RunDirPaths): boolean {
  const argv = readCmdline(pid);
  if (!argv || argv.length === 0) return false;
  return basename(argv[0]).startsWith('qemu-system') && argv.some((a) => a.includes(`path=${escapeOptionValue(paths.qmpSocket)},`));
}

/**
 * Removes what a VM left: always its sockets, pidfile and records; the logs too unless
 * `keepLogs`; the directory itself with `removeDir` (or when that left it empty).
 */
export function removeRunFiles(paths: RunDirPaths, opts: { keepLogs: boolean; removeDir: boolean }): void {
  const files = opts.keepLogs ? transientFiles(paths) : [...transientFiles(paths), paths.consoleLog, paths.qemuLog];
  for (const f of files) rmSync(f, { force: true });
  if (opts.removeDir) {
    rmSync(paths.dir, { recursive: true, force: true });
  } else if (!opts.keepLogs) {
    // Only remove a directory we emptied; never someone else's files.
    try {
      if (readdirSync(paths.dir).length === 0) rmdirSync(paths.dir);
    } catch {
      /* already gone */
    }
  }
}

/** The last lines of a log file, for error messages. */
export function tail(path: string, maxChars = 600): string {
  try {
    const text = readFileSync(path, 'utf8').trim();
    return text.length > maxChars ? `…${text.slice(-maxChars)}` : text;
  } catch {
    return '';
  }
}
