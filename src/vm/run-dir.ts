import { join } from 'node:path';
import { invalidArgument } from '../errors.js';

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
  };
  for (const s of [paths.qmpSocket, paths.agentSocket]) {
    if (Buffer.byteLength(s) > MAX_SOCKET_PATH) {
      throw invalidArgument(`VM run directory ${dir} is too long: socket path ${s} exceeds ${MAX_SOCKET_PATH} bytes`);
    }
  }
  return paths;
}

/** Files that only make sense while QEMU runs; removed when it is gone. */
export function transientFiles(p: RunDirPaths): string[] {
  return [p.qmpSocket, p.agentSocket, p.pidFile, p.stateFile, p.disksFile];
}
