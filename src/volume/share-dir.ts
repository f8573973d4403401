import { closeSync, constants, openSync } from 'node:fs';
import { lstat, mkdir, realpath, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { failedPrecondition, invalidArgument } from '../errors.js';
import { logger } from '../log.js';
import { mountBatch, mountHolding, mountsUnder, mountTable, umount, type MountEntry } from './host-mounts.js';

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
      await mountBatch([
        ['mount', '--bind', root, root],
        ['mount', '--make-private', root],
        ['mount', '--bind', p.mounts, p.mounts],
        ['mount', '--make-shared', p.mounts],
        ['mount', '--bind', p.mounts, p.shared],
        ['mount', '-o', 'remount,bind,ro,nosuid,nodev', p.shared],
        ['mount', '--make-slave', p.shared],
      ], 'making the share tree');
    } catch (e) {
      await share.destroy().catch((err) => log.warn({ root, err: String(err) }, 'cleanup of a half-made share failed'));
      throw e;
    }
    return share;
  }

  /**
   * Binds each `vol.hostPath` into the share as `<containerId>/<index>` and
   * returns those paths relative to the shared root. A missing host path
   * becomes a directory, as containerd does. All binds of a call run in one
   * shell (see mountBatch); their flags are computed up front from the host's
   * mount table, since a bind copies the flags of the mounts it copies.
   * On failure nothing of the call is left.
   */
  async addVolumes(containerId: string, vols: Array<{ index: number; vol: ShareVolume }>): Promise<string[]> {
    checkContainerId(containerId);
    const p = this.paths;
    const containerDir = join(p.mounts, containerId);
    const planned: Array<{ staged: string; target: string; isDir: boolean; source: string; vol: ShareVolume }> = [];
    for (const { index, vol } of vols) {
      if (!Number.isInteger(index) || index < 0) throw invalidArgument(`volume index ${index} is not valid`);
      let st = await stat(vol.hostPath).catch(() => undefined);
      if (!st) {
        await mkdir(vol.hostPath, { recursive: true, mode: 0o755 });
        st = await stat(vol.hostPath);
      }
      planned.push({ staged: join(p.staging, `${containerId}-${index}`), target: join(containerDir, String(index)), isDir: st.isDirectory(), source: await realpath(vol.hostPath), vol });
    }
    const table = mountTable();
    const commands: Array<['mount', ...string[]]> = [];
    try {
      await mkdir(containerDir, { recursive: true, mode: 0o700 });
      for (const v of planned) {
        await makePoint(v.staged, v.isDir);
        await makePoint(v.target, v.isDir);
        const [top, ...below] = copiedMounts(v.source, v.isDir, table);
        // One mount(8) makes the bind, sets its propagation and (since util-linux 2.27) remounts it with the flags.
        const topOptions = remountOptions(top!.options, v.vol.readonly).replace(/^remount,bind,/, '');
        commands.push(['mount', v.isDir ? '--rbind' : '--bind', v.vol.propagation === 'host-to-container' ? '--make-rslave' : '--make-rprivate', '-o', topOptions, v.vol.hostPath, v.staged]);
        for (const { point, options } of below) {
          commands.push(['mount', '-o', remountOptions(options, v.vol.readonly && v.vol.recursiveReadOnly), v.staged + point]);
        }
        commands.push(['mount', '--move', v.staged, v.target]);
      }
      await mountBatch(commands, `binding the volumes of container ${containerId}`);
    } catch (e) {
      for (const v of planned) {
        for (const path of [v.staged, v.target]) {
          await this.unmountTree(path).catch(() => undefined);
          await removePoint(path);
        }
      }
      throw e;
    }
    for (const v of planned) await removePoint(v.staged);
    return vols.map(({ index }) => `${containerId}/${index}`);
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
    const points = mountsUnder(dir).filter((point) => includeSelf || point !== dir);
    // One umount for the whole tree, deepest first; if any is busy (a host process holds a file there), detach them one by one.
    if (points.length > 0) {
      await mountBatch([['umount', ...points]], `unmounting ${dir}`).catch(async () => {
        for (const point of mountsUnder(dir).filter((pt) => includeSelf || pt !== dir)) {
          await umount([point], `unmounting ${point}`).catch(() => umount(['-l', point], `detaching ${point}`)).catch(() => undefined);
        }
      });
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
 * The mounts a bind of `source` copies, as paths relative to the bind (''
 * is its top) with their current flags: the mount holding `source`, and for a
 * recursive bind of a directory every mount below it.
 */
function copiedMounts(source: string, recursive: boolean, table: MountEntry[]): Array<{ point: string; options: string[] }> {
  const top = mountHolding(source, table);
  const out = [{ point: '', options: top?.options ?? [] }];
  if (!recursive) return out;
  const seen = new Set<string>();
  // Shallowest first; on a point with stacked mounts the last entry is the one on top, and the one a bind copies.
  for (const point of mountsUnder(source, table).reverse()) {
    if (point === source || seen.has(point)) continue;
    seen.add(point);
    out.push({ point: point.slice(source.length), options: mountHolding(point, table.filter((m) => m.point === point))!.options });
  }
  return out;
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
