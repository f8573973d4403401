import { closeSync, constants, openSync } from 'node:fs';
import { lstat, mkdir, readFile, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { failedPrecondition, invalidArgument } from '../errors.js';
import { logger } from '../log.js';
import { mount, mountsUnder, umount } from './host-mounts.js';

const log = logger('volume-share');

/**
 * One sandbox's shared directory on the host: the tree a virtio-fs helper
 * serves to the guest, with every CRI mount source bind-mounted into it.
 *
 *   <root>/            a bind mount of itself, private: nothing here leaks to the host's peers
 *     staging/         where a bind is made and given its flags before it is published
 *     mounts/          shared mount: the host publishes finished binds here, as mounts/<container>/<n>
 *     shared/          read-only bind of mounts/, a slave of it: the helper's root
 *     s/               the helper's vhost-user socket (short: sun_path has 108 bytes)
 *
 * Why the split: the guest may write through the helper, so the tree it sees
 * must not let it plant a symlink where the host is about to mount (the mount
 * would follow it onto any host path). shared/ itself is read-only, so the
 * guest cannot create, remove or replace anything at the mount points; only the
 * read-write volumes bound below it are writable. A bind gets nosuid, nodev (and
 * ro) in staging/ before it is moved under mounts/: a remount does not
 * propagate, a move does, so the copy the helper sees is born with its flags.
 */

export type SharePropagation = 'private' | 'host-to-container';

export interface ShareVolume {
  hostPath: string;
  readonly: boolean;
  /** Read-only for every mount below the source too (CRI recursive_read_only). */
  recursiveReadOnly: boolean;
  propagation: SharePropagation;
}

export interface ShareDirPaths {
  root: string;
  staging: string;
  mounts: string;
  shared: string;
  sockDir: string;
}

export function shareDirPaths(root: string): ShareDirPaths {
  return { root, staging: join(root, 'staging'), mounts: join(root, 'mounts'), shared: join(root, 'shared'), sockDir: join(root, 's') };
}

/** Container ids name directories here: plain hex as podvisor makes them, nothing else. */
function checkContainerId(id: string): string {
  if (!/^[a-f0-9]{8,64}$/.test(id)) throw invalidArgument(`container id ${JSON.stringify(id)} is not a podvisor id`);
  return id;
}

/** The per-mount options of one mount point, from mountinfo (field 6). */
async function mountOptions(point: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  for (const line of text.split('\n').reverse()) {
    const f = line.split(' ');
    if (f[4] === point) return (f[5] ?? '').split(',');
  }
  throw failedPrecondition(`${point} is not a mount point`);
}

export class ShareDir {
  readonly paths: ShareDirPaths;

  private constructor(root: string) {
    this.paths = shareDirPaths(root);
  }

  /** An existing share (daemon restart). */
  static open(root: string): ShareDir {
    return new ShareDir(root);
  }

  /** Makes the tree and its mounts; on failure nothing is left. */
  static async create(root: string): Promise<ShareDir> {
    const share = new ShareDir(root);
    const p = share.paths;
    try {
      await mkdir(dirname(root), { recursive: true, mode: 0o700 });
      await mkdir(root, { mode: 0o700 });
      for (const d of [p.staging, p.mounts, p.shared, p.sockDir]) await mkdir(d, { mode: 0o700 });
      await mount(['--bind', root, root], 'making the share root a mount');
      await mount(['--make-private', root], 'making the share root private');
      await mount(['--bind', p.mounts, p.mounts], 'making the share mounts dir a mount');
      await mount(['--make-shared', p.mounts], 'making the share mounts dir shared');
      await mount(['--bind', p.mounts, p.shared], 'binding the shared view');
      await mount(['-o', 'remount,bind,ro,nosuid,nodev', p.shared], 'making the shared view read-only');
      await mount(['--make-slave', p.shared], 'making the shared view a slave');
    } catch (e) {
      await share.destroy().catch((err) => log.warn({ root, err: String(err) }, 'cleanup of a half-made share failed'));
      throw e;
    }
    return share;
  }

  /**
   * Binds `vol.hostPath` into the share as `<containerId>/<index>` and returns
   * that path relative to the shared root. A missing host path becomes a
   * directory, as containerd does.
   */
  async addVolume(containerId: string, index: number, vol: ShareVolume): Promise<string> {
    checkContainerId(containerId);
    if (!Number.isInteger(index) || index < 0) throw invalidArgument(`volume index ${index} is not valid`);
    const p = this.paths;
    let st = await stat(vol.hostPath).catch(() => undefined);
    if (!st) {
      await mkdir(vol.hostPath, { recursive: true, mode: 0o755 });
      st = await stat(vol.hostPath);
    }
    const isDir = st.isDirectory();
    const staged = join(p.staging, `${containerId}-${index}`);
    const containerDir = join(p.mounts, containerId);
    const target = join(containerDir, String(index));
    await makePoint(staged, isDir);
    try {
      await mount([isDir ? '--rbind' : '--bind', vol.hostPath, staged], `binding ${vol.hostPath}`);
      await mount([vol.propagation === 'host-to-container' ? '--make-rslave' : '--make-rprivate', staged], `setting propagation of ${vol.hostPath}`);
      // Deepest last, so that the top mount's flags are what remains visible at the top.
      const points = mountsUnder(staged).reverse();
      for (const point of points) {
        const readOnly = vol.readonly && (point === staged || vol.recursiveReadOnly);
        await mount(['-o', remountOptions(await mountOptions(point), readOnly), point], `setting flags on ${vol.hostPath}`);
      }
      await mkdir(containerDir, { recursive: true, mode: 0o700 });
      await makePoint(target, isDir);
      await mount(['--move', staged, target], `publishing ${vol.hostPath} to the share`);
    } catch (e) {
      await this.unmountTree(staged).catch(() => undefined);
      await removePoint(staged);
      await this.unmountTree(target).catch(() => undefined);
      await removePoint(target);
      throw e;
    }
    await removePoint(staged);
    return `${containerId}/${index}`;
  }

  /** Unmounts and removes every volume of one container; a container with none is fine. */
  async removeContainer(containerId: string): Promise<void> {
    const dir = join(this.paths.mounts, checkContainerId(containerId));
    await this.unmountTree(dir, false);
    await rm(dir, { recursive: true, force: true });
  }

  /** Unmounts everything and removes the tree; safe to call again or on a half-made share. */
  async destroy(): Promise<void> {
    await this.unmountTree(this.paths.root);
    await rm(this.paths.root, { recursive: true, force: true });
  }

  /**
   * Unmounts every mount at or below `dir`, deepest first, and checks that none
   * is left before anything is deleted there: deleting through a forgotten
   * bind mount would delete the user's data.
   */
  private async unmountTree(dir: string, includeSelf = true): Promise<void> {
    for (const point of mountsUnder(dir)) {
      if (!includeSelf && point === dir) continue;
      try {
        await umount([point], `unmounting ${point}`);
      } catch {
        // Busy (a host process holds a file there): detach it so it is gone from this tree.
        await umount(['-l', point], `detaching ${point}`).catch(() => undefined);
      }
    }
    const left = mountsUnder(dir).filter((m) => includeSelf || m !== dir);
    if (left.length > 0) throw failedPrecondition(`cannot unmount ${left.join(', ')}; leaving ${dir} in place`);
  }
}

/** A mount point of the right kind, made exclusively (never through an existing entry). */
async function makePoint(path: string, dir: boolean): Promise<void> {
  if (dir) {
    await mkdir(path, { mode: 0o700 });
    return;
  }
  closeSync(openSync(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600));
}

async function removePoint(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (mountsUnder(path).length > 0) return;
  if (st.isDirectory()) await rmdir(path).catch(() => undefined);
  else await unlink(path).catch(() => undefined);
}

/**
 * Options for `mount -o remount,bind`: a bind remount sets the per-mount flags
 * to exactly what it is given, so start from the mount's current ones (keeping
 * an existing ro, noexec …) and add nosuid, nodev and, if asked, ro.
 */
export function remountOptions(current: string[], readOnly: boolean): string {
  const keep = current.filter((o) => o !== 'rw' && o !== 'ro' && o !== '');
  const set = new Set(keep);
  set.add('nosuid');
  set.add('nodev');
  const ro = readOnly || current.includes('ro');
  return ['remount', 'bind', ro ? 'ro' : 'rw', ...set].join(',');
}
