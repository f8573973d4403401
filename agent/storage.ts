import { existsSync, readdirSync, readFileSync, realpathSync, statfsSync } from 'node:fs';
import { lstat, mkdir, readFile, readlink, rm, rmdir, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { deadlineExceeded, invalidArgument } from '../src/errors.js';
import type {
  MountDiskRequest, MountDiskResponse, MountOverlayRequest, MountOverlayResponse, ReadFileRequest, ReadFileResponse, ResolvePathRequest, ResolvePathResponse,
  UnmountRequest,
} from '../src/agent-protocol/types.js';
import { GUEST_SHARED_DIR } from '../src/agent-protocol/guest-paths.js';
import { logger } from '../src/log.js';
import { run } from './run.js';
import { checkGuestPath } from './validate.js';

const log = logger('agent-storage');
const UPPER_ROOT = '/run/podvisor/upper';

interface ScsiDisk { device: string; serial: string; scsiId: number; lun: number }

/** SCSI disks the guest sees now, with their serial (VPD page 0x80) and address. */
export function scsiDisks(): ScsiDisk[] {
  const disks: ScsiDisk[] = [];
  for (const name of safeReaddir('/sys/block')) {
    if (!name.startsWith('sd')) continue;
    try {
      // .../host0/target0:0:3/0:0:3:0 -> H:C:T:L
      const [, , target, lun] = realpathSync(`/sys/block/${name}/device`).split('/').pop()!.split(':').map(Number);
      disks.push({ device: `/dev/${name}`, serial: vpdSerial(name), scsiId: target, lun });
    } catch {
      // the disk went away while we looked
    }
  }
  return disks;
}

function vpdSerial(name: string): string {
  try {
    // VPD page 0x80: 4-byte header (page length in byte 3), then the serial.
    const page = readFileSync(`/sys/block/${name}/device/vpd_pg80`);
    return page.subarray(4, 4 + page[3]).toString('latin1').trim();
  } catch {
    return '';
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

async function findDisk(req: MountDiskRequest): Promise<string> {
  const wanted = req.serial ? `serial ${JSON.stringify(req.serial)}` : `SCSI id ${req.scsiId ?? 0} lun ${req.lun ?? 0}`;
  const deadline = Date.now() + (req.waitMs || 5000);
  for (;;) {
    const disk = scsiDisks().find((d) => (req.serial ? d.serial === req.serial : d.scsiId === (req.scsiId ?? 0) && d.lun === (req.lun ?? 0)));
    if (disk && existsSync(disk.device)) return disk.device;
    if (Date.now() > deadline) {
      const seen = scsiDisks().map((d) => `${d.device} (serial ${d.serial || '-'}, id ${d.scsiId}, lun ${d.lun})`).join(', ') || 'none';
      throw deadlineExceeded(`no disk with ${wanted} appeared within ${req.waitMs || 5000} ms; disks present: ${seen}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export async function mountDisk(req: MountDiskRequest): Promise<MountDiskResponse> {
  const mountPoint = checkGuestPath('mount_point', req.mountPoint);
  if (!req.serial && req.scsiId === undefined) throw invalidArgument('MountDisk needs a serial or a SCSI id');
  const fsType = req.fsType || 'erofs';
  if (!/^[a-z0-9]+$/.test(fsType)) throw invalidArgument(`fs_type ${JSON.stringify(fsType)} is not a filesystem name`);
  const device = await findDisk(req);
  await mkdir(mountPoint, { recursive: true });
  await run('mount', ['-t', fsType, '-o', req.readWrite ? 'rw' : 'ro', device, mountPoint], { what: `mounting ${device} on ${mountPoint}` });
  log.info({ device, mountPoint, fsType }, 'mounted disk');
  return { device };
}

function upperFor(target: string): string {
  return `${UPPER_ROOT}/${createHash('sha256').update(target).digest('hex').slice(0, 16)}`;
}

/** An overlay of read-only lower dirs with a private tmpfs for the writable layer. */
export async function mountOverlay(req: MountOverlayRequest): Promise<MountOverlayResponse> {
  const target = checkGuestPath('target', req.target);
  if (!req.lowerDirs?.length) throw invalidArgument('MountOverlay needs at least one lower dir');
  const lowers = req.lowerDirs.map((d) => checkGuestPath('lower dir', d));
  if (lowers.some((d) => d.includes(':') || d.includes(','))) throw invalidArgument('lower dirs may not contain ":" or ","');
  const upperRoot = upperFor(target);
  await mkdir(upperRoot, { recursive: true });
  const size = req.upperSizeBytes ? `,size=${req.upperSizeBytes}` : '';
  await run('mount', ['-t', 'tmpfs', '-o', `mode=0755${size}`, 'tmpfs', upperRoot], { what: `mounting the tmpfs upper for ${target}` });
  try {
    await mkdir(`${upperRoot}/upper`);
    await mkdir(`${upperRoot}/work`);
    await mkdir(target, { recursive: true });
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lowers.join(':')},upperdir=${upperRoot}/upper,workdir=${upperRoot}/work`, target], { what: `mounting the overlay on ${target}` });
  } catch (err) {
    await run('umount', [upperRoot]).catch(() => undefined);
    await rm(upperRoot, { recursive: true, force: true });
    throw err;
  }
  return { upperDir: `${upperRoot}/upper` };
}

function isMounted(path: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8').split('\n').some((line) => line.split(' ')[1] === path);
}

export async function unmount(req: UnmountRequest): Promise<void> {
  const path = checkGuestPath('path', req.path);
  if (isMounted(path)) await run('umount', [path], { what: `unmounting ${path}`, code: 'FAILED_PRECONDITION' });
  const upperRoot = upperFor(path);
  if (isMounted(upperRoot)) await run('umount', [upperRoot], { what: `unmounting the upper of ${path}` });
  await rm(upperRoot, { recursive: true, force: true });
  if (req.removeDir) await rmdir(path).catch(() => undefined);
}

const READ_FILE_CAP = 1024 * 1024;

/**
 * Resolves `path` inside `root` the way a container rooted there would see it:
 * every symlink, absolute or relative, stays inside the tree (an image's
 * /etc/passwd -> /usr/share/... must not read the guest's own file).
 */
async function resolveInTree(root: string, path: string): Promise<string | undefined> {
  let pending = path.split('/').filter(Boolean);
  let resolved: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const candidate = [root, ...resolved, part].join('/');
    let isLink: boolean;
    try {
      isLink = (await lstat(candidate)).isSymbolicLink();
    } catch {
      return undefined;
    }
    if (!isLink) {
      resolved.push(part);
      continue;
    }
    if (++links > 40) throw invalidArgument(`${path} in ${root}: too many levels of symbolic links`);
    const target = await readlink(candidate);
    if (target.startsWith('/')) resolved = [];
    pending = [...target.split('/').filter(Boolean), ...pending];
  }
  return [root, ...resolved].join('/');
}

export async function readFileInTree(req: ReadFileRequest): Promise<ReadFileResponse> {
  const root = checkGuestPath('root', req.root);
  if (!req.path?.startsWith('/')) throw invalidArgument(`path must be absolute inside the tree, got ${JSON.stringify(req.path)}`);
  const cap = Math.min(req.maxBytes || READ_FILE_CAP, READ_FILE_CAP);
  const file = await resolveInTree(root, req.path);
  if (!file) return { exists: false, data: new Uint8Array() };
  const st = await stat(file).catch(() => undefined);
  if (!st?.isFile()) return { exists: false, data: new Uint8Array() };
  if (st.size > cap) throw invalidArgument(`${req.path} in ${root} is ${st.size} bytes, more than the ${cap} allowed`);
  return { exists: true, data: await readFile(file) };
}

/**
 * Where `path` inside `root` leads, symlinks resolved inside the tree: an
 * image volume's sub-path is bound from here, so a link in a tenant's image
 * cannot make the bind reach the guest's own files.
 */
export async function resolvePathInTree(req: ResolvePathRequest): Promise<ResolvePathResponse> {
  const root = checkGuestPath('root', req.root);
  if (!req.path?.startsWith('/')) throw invalidArgument(`path must be absolute inside the tree, got ${JSON.stringify(req.path)}`);
  const resolved = await resolveInTree(root, req.path);
  const st = resolved ? await stat(resolved).catch(() => undefined) : undefined;
  if (!resolved || !st) return { exists: false, path: '', directory: false };
  return { exists: true, path: resolved, directory: st.isDirectory() };
}

/** Mounts the sandbox's virtio-fs share (the host enforces read-only volumes; this mount is plain). */
export async function mountSharedFs(tag: string): Promise<void> {
  if (!/^[A-Za-z0-9_.-]{1,36}$/.test(tag)) throw invalidArgument(`virtio-fs tag ${JSON.stringify(tag)} is not valid`);
  if (isMounted(GUEST_SHARED_DIR)) return;
  await mkdir(GUEST_SHARED_DIR, { recursive: true, mode: 0o700 });
  await run('mount', ['-t', 'virtiofs', '-o', 'nodev', tag, GUEST_SHARED_DIR], { what: `mounting the sandbox share ${tag}` });
  log.info({ tag, mountPoint: GUEST_SHARED_DIR }, 'mounted the sandbox share');
}

/** Bytes and inodes a rootfs's private tmpfs upper layer uses (its writable layer), if it has one. */
export function upperUsage(rootfs: string): { usedBytes: number; inodesUsed: number } | undefined {
  try {
    const st = statfsSync(upperFor(rootfs));
    return { usedBytes: (st.blocks - st.bfree) * st.bsize, inodesUsed: st.files - st.ffree };
  } catch {
    return undefined;
  }
}
