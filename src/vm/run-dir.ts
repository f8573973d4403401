import { chmodSync, closeSync, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmdirSync, rmSync } from 'node:fs';
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
  /** Where QEMU serves the serial console; podvisord reads it into `consoleLog`. */
  consoleSocket: string;
  /**
   * The guest's serial console as podvisord kept it: a two-file ring (this file and
   * `consoleLogOld`) of at most the configured cap. Kept after the VM stops, removed with the sandbox.
   */
  consoleLog: string;
  /** The console's older half, once `consoleLog` has filled its share of the cap. */
  consoleLogOld: string;
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
    consoleSocket: join(dir, 'console.sock'),
    consoleLog: join(dir, 'console.log'),
    consoleLogOld: join(dir, 'console.log.1'),
    qemuLog: join(dir, 'qemu.log'),
    stateFile: join(dir, 'vm.json'),
    disksFile: join(dir, 'disks.json'),
    migrationSocket: join(dir, 'migration.sock'),
  };
  for (const s of [paths.qmpSocket, paths.agentSocket, paths.consoleSocket, paths.migrationSocket]) {
    if (Buffer.byteLength(s) > MAX_SOCKET_PATH) {
      throw invalidArgument(`VM run directory ${dir} is too long: socket path ${s} exceeds ${MAX_SOCKET_PATH} bytes`);
    }
  }
  return paths;
}

/** Files that only make sense while QEMU runs; removed when it is gone. */
export function transientFiles(p: RunDirPaths): string[] {
  return [p.qmpSocket, p.agentSocket, p.consoleSocket, p.migrationSocket, p.pidFile, p.stateFile, p.disksFile];
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
  const files = opts.keepLogs ? transientFiles(paths) : [...transientFiles(paths), paths.consoleLog, paths.consoleLogOld, paths.qemuLog];
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

/**
 * The end of a log file, for error messages: reads at most `maxChars` bytes from the end
 * (never the whole file, which a guest may have made large), as text.
 */
export function tail(path: string, maxChars = 600): string {
  return tailBytes(path, maxChars).toString('utf8').trim().replace(/^\uFFFD+/, '');
}

/** The last `max` bytes of `path` (fewer if it is shorter; empty if it is missing). */
export function tailBytes(path: string, max: number): Buffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return Buffer.alloc(0);
  }
  try {
    const size = fstatSync(fd).size;
    const len = Math.min(size, max);
    const buf = Buffer.alloc(len);
    const n = readSync(fd, buf, 0, len, size - len);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** The end of the console ring: the current file, topped up from the older half when short. */
export function consoleTail(paths: RunDirPaths, maxChars = 2000): string {
  const current = tailBytes(paths.consoleLog, maxChars);
  const older = current.length < maxChars ? tailBytes(paths.consoleLogOld, maxChars - current.length) : Buffer.alloc(0);
  return Buffer.concat([older, current]).toString('utf8').trim().replace(/^\uFFFD+/, '');
}
