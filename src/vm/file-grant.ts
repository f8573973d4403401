import { spawn } from 'node:child_process';
import { closeSync, fchownSync, fstatSync, openSync } from 'node:fs';
import { failedPrecondition, messageOf } from '../errors.js';
import type { QemuIdentity } from './confinement.js';

/**
 * Hands host files to a QEMU that runs as its own uid: a disk hot-plugged into a confined VM,
 * and (libvirt backend) everything a QEMU started unprivileged opens at start-up. That QEMU
 * cannot walk podvisord's 0700 directories, and Node cannot pass a descriptor over QMP or
 * libvirt (SCM_RIGHTS), so podvisord opens the files and gives the descriptors to a
 * short-lived holder process of the VM's uid; QEMU opens `/proc/<holder>/fd/<n>`. Opening
 * through that link skips the directories above the file, and only a process of the same uid
 * (or root) may follow it. The file's own mode still applies: a read-only file must be
 * readable by others (image disks and the guest image are 0644), a writable disk is given to
 * the VM's uid (chown) for its life, and a directory or socket handed over must already
 * belong to the VM's uid.
 */

export interface FileGrant {
  /** The name QEMU opens. */
  filename: string;
  /** Ends the holder; call once QEMU has opened the file. */
  done(): void;
}

/** One entry of a grant: a file to read, a disk to write, a directory QEMU makes sockets in, a socket it connects to. */
export type GrantKind = 'read' | 'write' | 'dir' | 'socket';

export interface PathsGrant {
  /** The names QEMU opens, in the order asked. */
  filenames: string[];
  done(): void;
}

const HOLDER_SECONDS = 30;
/** Not in Node's fs.constants: a descriptor that names an inode (here a socket) without opening it. */
const O_PATH = 0o10000000;
const O_DIRECTORY = 0o200000;
/** The holder's descriptors start after stdin, stdout and stderr. */
const FIRST_FD = 3;

/**
 * How a confined QEMU reaches a disk plugged after it runs as its uid (DiskSet's opener);
 * an unconfined (root) QEMU opens the path itself.
 */
export function diskOpenerFor(runAs: QemuIdentity | undefined) {
  return runAs ? (path: string, readOnly: boolean) => grantFileTo(runAs, path, readOnly) : undefined;
}

export async function grantFileTo(who: QemuIdentity, path: string, readOnly: boolean): Promise<FileGrant> {
  const g = await grantPathsTo(who, [{ path, kind: readOnly ? 'read' : 'write' }]);
  return { filename: g.filenames[0]!, done: g.done };
}

/** Opens every path and hands them all to one holder of `who`'s uid. */
export async function grantPathsTo(who: QemuIdentity, entries: Array<{ path: string; kind: GrantKind }>): Promise<PathsGrant> {
  const fds: number[] = [];
  try {
    for (const { path, kind } of entries) fds.push(openForGrant(who, path, kind));
    const holder = spawn('sleep', [String(HOLDER_SECONDS)], { uid: who.uid, gid: who.gid, stdio: ['ignore', 'ignore', 'ignore', ...fds] });
    await new Promise<void>((resolve, reject) => {
      holder.once('spawn', resolve);
      holder.once('error', (e) => reject(failedPrecondition(`cannot start the descriptor holder of uid ${who.uid}: ${messageOf(e)}`, e)));
    });
    return {
      filenames: entries.map((_, i) => `/proc/${holder.pid}/fd/${FIRST_FD + i}`),
      done: () => {
        holder.kill('SIGKILL');
      },
    };
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

function openForGrant(who: QemuIdentity, path: string, kind: GrantKind): number {
  let fd: number;
  try {
    fd = openSync(path, kind === 'write' ? 'r+' : kind === 'read' ? 'r' : kind === 'dir' ? O_DIRECTORY : O_PATH);
  } catch (e) {
    throw failedPrecondition(`cannot open ${path} for the VM: ${messageOf(e)}`, e);
  }
  try {
    const st = fstatSync(fd);
    if (kind === 'write') {
      fchownSync(fd, who.uid, who.gid);
    } else if (kind === 'read' && !(st.mode & 0o004) && st.uid !== who.uid) {
      throw failedPrecondition(`${path} (mode ${(st.mode & 0o777).toString(8)}) is not readable by others, so a confined QEMU cannot read it`);
    } else if ((kind === 'dir' || kind === 'socket') && st.uid !== who.uid) {
      throw failedPrecondition(`${path} belongs to uid ${st.uid}, not to the VM's uid ${who.uid}`);
    }
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}
