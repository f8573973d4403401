import { spawn } from 'node:child_process';
import { closeSync, fchownSync, fstatSync, openSync } from 'node:fs';
import { failedPrecondition, messageOf } from '../errors.js';
import type { QemuIdentity } from './confinement.js';

/**
 * Hands a host file to a QEMU that already runs as its own uid (a disk hot-plugged into a
 * confined VM). That QEMU cannot walk podvisord's 0700 directories, and Node cannot pass a
 * descriptor over QMP (SCM_RIGHTS), so podvisord opens the file and gives the descriptor to
 * a short-lived holder process of the VM's uid; QEMU opens `/proc/<holder>/fd/3`. Opening
 * through that link skips the directories, and only a process of the same uid may follow
 * it. The file's own mode still applies: a read-only disk must be readable by others (image
 * disks are 0644), and a writable disk is given to the VM's uid (chown) for its life.
 */

export interface FileGrant {
  /** The name QEMU opens. */
  filename: string;
  /** Ends the holder; call once QEMU has opened the file. */
  done(): void;
}

const HOLDER_SECONDS = 30;

export async function grantFileTo(who: QemuIdentity, path: string, readOnly: boolean): Promise<FileGrant> {
  let fd: number;
  try {
    fd = openSync(path, readOnly ? 'r' : 'r+');
  } catch (e) {
    throw failedPrecondition(`cannot open disk ${path} for the VM: ${messageOf(e)}`, e);
  }
  try {
    const st = fstatSync(fd);
    if (!readOnly) {
      fchownSync(fd, who.uid, who.gid);
    } else if (!(st.mode & 0o004) && st.uid !== who.uid) {
      throw failedPrecondition(`disk ${path} (mode ${(st.mode & 0o777).toString(8)}) is not readable by others, so a confined QEMU cannot read it`);
    }
    const holder = spawn('sleep', [String(HOLDER_SECONDS)], { uid: who.uid, gid: who.gid, stdio: ['ignore', 'ignore', 'ignore', fd] });
    await new Promise<void>((resolve, reject) => {
      holder.once('spawn', resolve);
      holder.once('error', (e) => reject(failedPrecondition(`cannot start the descriptor holder for ${path}: ${messageOf(e)}`, e)));
    });
    return {
      filename: `/proc/${holder.pid}/fd/3`,
      done: () => {
        holder.kill('SIGKILL');
      },
    };
  } finally {
    closeSync(fd);
  }
}
