import { chownSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { invalidArgument } from '../../errors.js';
import type { QemuIdentity } from '../confinement.js';
import { grantPathsTo, type GrantKind } from '../file-grant.js';
import type { VmProfile } from '../profile.js';
import type { SharedFs } from '../qemu-args.js';
import { runDirPaths, type RunDirPaths } from '../run-dir.js';

/**
 * What a QEMU that libvirt starts as its own uid can reach of podvisor's. Unlike the QEMU
 * backend's QEMU, which opens everything as root and then drops to its uid (`-runas`), this
 * one is unprivileged from its first instruction (libvirt's per-domain DAC label with
 * `relabel='no'`: libvirt chowns nothing of podvisor's). podvisor's directories stay 0700
 * root, and nothing is made world-readable or searchable for it:
 * - the agent and console sockets: libvirt binds them itself (as root) and passes QEMU the
 *   listening descriptors;
 * - podvisor's own QMP socket, which QEMU binds (it comes through `<qemu:commandline>`):
 *   in a directory of the VM's uid inside the run directory (`q/`);
 * - kernel, initrd, system disk, the `q/` directory and the virtio-fs socket (chowned to the
 *   VM's uid; it serves this sandbox alone): opened by podvisord and handed over as
 *   descriptors of a holder process of the VM's uid (src/vm/file-grant.ts); the domain XML
 *   names `/proc/<holder>/fd/<n>`. QEMU opens them all before libvirt's create returns, and
 *   the holder ends then: afterwards the QEMU can reach none of these paths;
 * - hot-plugged image disks: the same holder, one per disk (DiskSet's opener).
 */

/** The directory of the VM's uid in the run directory, where QEMU binds podvisor's QMP socket. */
const QEMU_DIR = 'q';

/** The run directory's paths for a libvirt domain: the QMP socket is in `q/`. */
export function libvirtRunPaths(runDir: string): RunDirPaths & { qemuDir: string } {
  const base = runDirPaths(runDir);
  const qemuDir = join(runDir, QEMU_DIR);
  const qmpSocket = join(qemuDir, 'qmp.sock');
  if (Buffer.byteLength(qmpSocket) > 107) throw invalidArgument(`VM run directory ${runDir} is too long for socket path ${qmpSocket}`);
  return { ...base, qemuDir, qmpSocket };
}

export interface GrantedStart {
  /** The profile with kernel, initrd and system disk as the holder's descriptors. */
  profile: VmProfile;
  paths: RunDirPaths;
  sharedFs?: SharedFs;
  /** Ends the holder; call once libvirt's create returned (QEMU has opened everything). */
  done(): void;
}

/** Makes `q/` for `who`, and hands QEMU everything it opens at start-up. */
export async function grantStart(
  who: QemuIdentity,
  input: { profile: VmProfile; paths: RunDirPaths & { qemuDir: string }; sharedFs?: SharedFs },
): Promise<GrantedStart> {
  const { profile, paths, sharedFs } = input;
  rmSync(paths.qemuDir, { recursive: true, force: true });
  mkdirSync(paths.qemuDir, { mode: 0o700 });
  chownSync(paths.qemuDir, who.uid, who.gid);
  if (sharedFs) chownSync(sharedFs.socket, who.uid, who.gid);
  const wanted: Array<{ path: string; kind: GrantKind }> = [{ path: paths.qemuDir, kind: 'dir' }, { path: profile.kernel, kind: 'read' }];
  if (profile.initrd) wanted.push({ path: profile.initrd, kind: 'read' });
  if (profile.systemDisk) wanted.push({ path: profile.systemDisk, kind: 'read' });
  if (sharedFs) wanted.push({ path: sharedFs.socket, kind: 'socket' });
  const grant = await grantPathsTo(who, wanted);
  const names = [...grant.filenames];
  const dir = names.shift()!;
  const kernel = names.shift()!;
  const initrd = profile.initrd ? names.shift() : undefined;
  const systemDisk = profile.systemDisk ? names.shift() : undefined;
  const socket = sharedFs ? names.shift() : undefined;
  return {
    profile: { ...profile, kernel, ...(initrd ? { initrd } : {}), ...(systemDisk ? { systemDisk } : {}) },
    paths: { ...paths, qmpSocket: `${dir}/qmp.sock` },
    ...(sharedFs && socket ? { sharedFs: { ...sharedFs, socket } } : {}),
    done: grant.done,
  };
}
