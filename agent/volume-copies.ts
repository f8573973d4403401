import { constants, lstatSync, watch, type FSWatcher } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, readlink, rename, rm, symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { GUEST_VOLUMES_DIR } from '../src/agent-protocol/guest-paths.js';
import type { ReadVolumeRequest, ReadVolumeResponse, RemoveVolumeRequest, VolumeEntry, WatchVolumesRequest, WriteVolumeRequest } from '../src/agent-protocol/types.js';
import { invalidArgument, resourceExhausted } from '../src/errors.js';

/**
 * Copied volumes (share mode "copy"): the host pushes a volume's entries and
 * reads writable ones back; here they are plain files under GUEST_VOLUMES_DIR
 * that containers bind-mount. Updates keep kubelet's atomic-writer order (the
 * host sends directories and files before symlinks, removals last) and replace
 * each entry by rename, so a reader sees the old `..data` or the new one, never
 * half of one. A single-file volume is rewritten in place: a container's bind
 * mount of a file holds its inode.
 */

/** What one manifest may list (the host's limit is the same). */
const MAX_ENTRIES = 4096;
/** Data in one ReadVolume answer (the ttRPC message limit is 4 MiB). */
const MAX_READ_BYTES = 3 << 20;

function volumeRoot(volumeId: string): string {
  if (!/^[a-f0-9]{16}$/.test(volumeId)) throw invalidArgument(`volume id ${JSON.stringify(volumeId)} is not 16 hex digits`);
  return join(GUEST_VOLUMES_DIR, volumeId);
}

/** A path inside the volume: relative, no '.', '..' or empty parts. */
function entryPath(root: string, rel: string): string {
  if (rel === '') return root;
  const parts = rel.split('/');
  if (rel.length > 4096 || rel.includes('\0') || parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw invalidArgument(`volume entry path ${JSON.stringify(rel)} is not a plain relative path`);
  }
  return join(root, ...parts);
}

const tmpName = (path: string) => join(dirname(path), `.podvisor-tmp-${randomBytes(6).toString('hex')}`);

async function writeFileAt(path: string, data: Uint8Array, mode: number, inPlace: boolean): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (inPlace && st?.isFile()) {
    // O_NOFOLLOW: a container may have swapped a writable file for a link.
    const fh = await open(path, constants.O_WRONLY | constants.O_TRUNC | constants.O_NOFOLLOW);
    try {
      await fh.writeFile(data);
      await fh.chmod(mode);
    } finally {
      await fh.close();
    }
    return;
  }
  if (st?.isDirectory()) await rm(path, { recursive: true, force: true });
  const tmp = tmpName(path);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // the umask does not apply to what the host asked for
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

async function putEntry(root: string, e: VolumeEntry): Promise<void> {
  const path = entryPath(root, e.path);
  const mode = (e.mode ?? 0) & 0o777;
  if (e.path === '') await mkdir(GUEST_VOLUMES_DIR, { recursive: true, mode: 0o700 });
  switch (e.kind) {
    case 'dir': {
      const st = await lstat(path).catch(() => undefined);
      if (st && !st.isDirectory()) await rm(path, { force: true });
      if (!st?.isDirectory()) await mkdir(path, { mode });
      await chmod(path, mode);
      return;
    }
    case 'file':
      return writeFileAt(path, e.data ?? new Uint8Array(), mode, e.path === '');
    case 'symlink': {
      if (e.path === '') throw invalidArgument('a volume root cannot be a symlink');
      const st = await lstat(path).catch(() => undefined);
      if (st?.isDirectory()) await rm(path, { recursive: true, force: true });
      const tmp = tmpName(path);
      await symlink(Buffer.from(e.data ?? new Uint8Array()).toString('utf8'), tmp);
      await rename(tmp, path);
      return;
    }
    default:
      throw invalidArgument(`volume entry ${JSON.stringify(e.path)} has unknown kind ${JSON.stringify(e.kind)}`);
  }
}

export async function writeVolume(req: WriteVolumeRequest): Promise<void> {
  const root = volumeRoot(req.volumeId);
  for (const e of req.put ?? []) await putEntry(root, e);
  for (const rel of req.remove ?? []) {
    if (rel === '') throw invalidArgument('the volume root is removed with RemoveVolume');
    await rm(entryPath(root, rel), { recursive: true, force: true });
  }
}

function stampOf(st: { mtimeNs: bigint; ctimeNs: bigint; size: bigint; ino: bigint }): string {
  return `${st.mtimeNs}:${st.ctimeNs}:${st.size}:${st.ino}`;
}

/** The volume's entries without data, parents before children; links carry their target. */
async function manifest(root: string): Promise<VolumeEntry[]> {
  const out: VolumeEntry[] = [];
  const visit = async (path: string, rel: string): Promise<void> => {
    if (out.length >= MAX_ENTRIES) throw resourceExhausted(`volume ${root} has more than ${MAX_ENTRIES} entries`);
    const st = await lstat(path, { bigint: true }).catch(() => undefined);
    if (!st) return; // removed while walking
    const mode = Number(st.mode) & 0o777;
    if (st.isSymbolicLink()) {
      out.push({ path: rel, kind: 'symlink', mode, data: Buffer.from(await readlink(path)), stamp: stampOf(st) });
    } else if (st.isFile()) {
      out.push({ path: rel, kind: 'file', mode, stamp: stampOf(st) });
    } else if (st.isDirectory()) {
      out.push({ path: rel, kind: 'dir', mode, stamp: stampOf(st) });
      for (const name of (await readdir(path).catch(() => [] as string[])).sort()) {
        if (name.startsWith('.podvisor-tmp-')) continue;
        await visit(join(path, name), rel === '' ? name : `${rel}/${name}`);
      }
    }
    // Sockets, fifos and device nodes stay in the guest.
  };
  await visit(root, '');
  return out;
}

async function readEntryFile(root: string, rel: string): Promise<VolumeEntry | undefined> {
  const fh = await open(entryPath(root, rel), constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => undefined);
  if (!fh) return undefined; // gone, or no longer a file
  try {
    const st = await fh.stat({ bigint: true });
    if (!st.isFile()) return undefined;
    if (st.size > BigInt(MAX_READ_BYTES)) throw resourceExhausted(`${rel} is ${st.size} bytes, more than a copied volume file may have (${MAX_READ_BYTES})`);
    return { path: rel, kind: 'file', mode: Number(st.mode) & 0o777, data: await fh.readFile(), stamp: stampOf(st) };
  } finally {
    await fh.close();
  }
}

export async function readVolume(req: ReadVolumeRequest): Promise<ReadVolumeResponse> {
  const root = volumeRoot(req.volumeId);
  if (!(await lstat(root).catch(() => undefined))) return { exists: false, entries: [] };
  if (!req.paths?.length) {
    const entries = await manifest(root);
    if (!req.withData) return { exists: true, entries };
    // Changed files ride along with the manifest, so a small change reaches the host in one call.
    const known = new Map((req.known ?? []).map((e) => [e.path, e.stamp]));
    let bytes = 0;
    for (const [i, e] of entries.entries()) {
      if (e.kind !== 'file' || known.get(e.path) === e.stamp) continue;
      const size = Number((e.stamp ?? '').split(':')[2] ?? 0);
      if (bytes + size > MAX_READ_BYTES) continue; // the host asks for it by path
      const withData = await readEntryFile(root, e.path).catch(() => undefined);
      if (!withData) continue;
      bytes += withData.data!.length;
      entries[i] = withData;
    }
    return { exists: true, entries };
  }
  const entries: VolumeEntry[] = [];
  let bytes = 0;
  for (const rel of req.paths) {
    const e = await readEntryFile(root, rel);
    if (!e) continue;
    bytes += e.data!.length;
    if (bytes > MAX_READ_BYTES) throw resourceExhausted(`the files asked for exceed ${MAX_READ_BYTES} bytes in one answer`);
    entries.push(e);
  }
  return { exists: true, entries };
}

export async function removeVolume(req: RemoveVolumeRequest): Promise<void> {
  unwatch(req.volumeId);
  await rm(volumeRoot(req.volumeId), { recursive: true, force: true });
}

// ---------------------------------------------------------------- change watch

/** inotify watchers of the volumes the host watches (its writable ones), and which changed since the host last asked. */
const watchers = new Map<string, FSWatcher>();
const dirty = new Set<string>();
/** WatchVolumes calls waiting for a change (one, unless a reconnected host left an old one waiting). */
const waiters = new Set<() => void>();
/** The longest one WatchVolumes waits. */
const MAX_WATCH_MS = 60_000;

function markDirty(volumeId: string): void {
  dirty.add(volumeId);
  for (const w of waiters) w();
}

function ensureWatch(volumeId: string): void {
  if (watchers.has(volumeId)) return;
  // A first watch: whatever changed before it is read once.
  markDirty(volumeId);
  try {
    const root = volumeRoot(volumeId);
    // Recursive: a file written in a subdirectory of an emptyDir counts too. A file root is watched as the file.
    const w = watch(root, { recursive: lstatSync(root).isDirectory(), persistent: false }, () => markDirty(volumeId));
    w.on('error', () => {
      unwatch(volumeId);
      markDirty(volumeId); // the host reads it again, and the next call watches anew
    });
    watchers.set(volumeId, w);
  } catch {
    // Not there (yet): the host's read says so, and the next call watches again.
  }
}

function unwatch(volumeId: string): void {
  watchers.get(volumeId)?.close();
  watchers.delete(volumeId);
  dirty.delete(volumeId);
}

export async function watchVolumes(req: WatchVolumesRequest): Promise<string[]> {
  const ids = (req.volumeIds ?? []).map((id) => (volumeRoot(id), id));
  for (const id of ids) ensureWatch(id);
  const take = () => {
    const changed = ids.filter((id) => dirty.has(id));
    for (const id of changed) dirty.delete(id);
    return changed;
  };
  let changed = take();
  if (changed.length > 0 || ids.length === 0) return changed;
  const waitMs = Math.min(req.waitMs || 0, MAX_WATCH_MS);
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, waitMs);
    waiters.add(done);
    function done() {
      clearTimeout(timer);
      waiters.delete(done);
      resolve();
    }
  });
  changed = take();
  return changed;
}
