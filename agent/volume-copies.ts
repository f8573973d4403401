import {
  chmodSync as chmod, closeSync, constants, fchmodSync, fstatSync, lstatSync, mkdirSync as mkdir, openSync, readdirSync as readdir,
  readFileSync, readlinkSync as readlink, renameSync as rename, rmSync as rm, symlinkSync as symlink, watch, writeFileSync, type FSWatcher,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { GUEST_VOLUMES_DIR } from '../src/agent-protocol/guest-paths.js';
import type { ReadVolumeRequest, ReadVolumeResponse, RemoveVolumeRequest, VolumeEntry, WatchVolumesRequest, WatchVolumesResponse, WriteVolumeRequest } from '../src/agent-protocol/types.js';
import { invalidArgument, resourceExhausted } from '../src/errors.js';

/**
 * Copied volumes (share mode "copy"): the host pushes a volume's entries and
 * reads writable ones back; here they are plain files under GUEST_VOLUMES_DIR
 * that containers bind-mount. Updates keep kubelet's atomic-writer order (the
 * host sends directories and files before symlinks, removals last) and replace
 * each entry by rename, so a reader sees the old `..data` or the new one, never
 * half of one. A single-file volume is rewritten in place: a container's bind
 * mount of a file holds its inode. The file work is synchronous: these are
 * small trees in guest RAM, and under TCG a trip through libuv's thread pool per
 * call costs more than the call (a request is at most a few MiB).
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

const lstat = (path: string) => { try { return lstatSync(path); } catch { return undefined; } };
const lstatBig = (path: string) => { try { return lstatSync(path, { bigint: true }); } catch { return undefined; } };

const tmpName = (path: string) => join(dirname(path), `.podvisor-tmp-${randomBytes(6).toString('hex')}`);

function writeFileAt(path: string, data: Uint8Array, mode: number, inPlace: boolean): void {
  const st = lstat(path);
  if (inPlace && st?.isFile()) {
    // O_NOFOLLOW: a container may have swapped a writable file for a link.
    const fd = openSync(path, constants.O_WRONLY | constants.O_TRUNC | constants.O_NOFOLLOW);
    try {
      writeFileSync(fd, data);
      fchmodSync(fd, mode);
    } finally {
      closeSync(fd);
    }
    return;
  }
  if (st?.isDirectory()) rm(path, { recursive: true, force: true });
  const tmp = tmpName(path);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    writeFileSync(fd, data);
    fchmodSync(fd, mode); // the umask does not apply to what the host asked for
  } finally {
    closeSync(fd);
  }
  rename(tmp, path);
}

function putEntry(root: string, e: VolumeEntry): void {
  const path = entryPath(root, e.path);
  const mode = (e.mode ?? 0) & 0o777;
  if (e.path === '') mkdir(GUEST_VOLUMES_DIR, { recursive: true, mode: 0o700 });
  switch (e.kind) {
    case 'dir': {
      const st = lstat(path);
      if (st && !st.isDirectory()) rm(path, { force: true });
      if (!st?.isDirectory()) mkdir(path, { mode });
      chmod(path, mode);
      return;
    }
    case 'file':
      return writeFileAt(path, e.data ?? new Uint8Array(), mode, e.path === '');
    case 'symlink': {
      if (e.path === '') throw invalidArgument('a volume root cannot be a symlink');
      if (lstat(path)?.isDirectory()) rm(path, { recursive: true, force: true });
      const tmp = tmpName(path);
      symlink(Buffer.from(e.data ?? new Uint8Array()).toString('utf8'), tmp);
      rename(tmp, path);
      return;
    }
    default:
      throw invalidArgument(`volume entry ${JSON.stringify(e.path)} has unknown kind ${JSON.stringify(e.kind)}`);
  }
}

export async function writeVolume(req: WriteVolumeRequest): Promise<void> {
  const root = volumeRoot(req.volumeId);
  for (const e of req.put ?? []) putEntry(root, e);
  for (const rel of req.remove ?? []) {
    if (rel === '') throw invalidArgument('the volume root is removed with RemoveVolume');
    rm(entryPath(root, rel), { recursive: true, force: true });
  }
}

function stampOf(st: { mtimeNs: bigint; ctimeNs: bigint; size: bigint; ino: bigint }): string {
  return `${st.mtimeNs}:${st.ctimeNs}:${st.size}:${st.ino}`;
}

/** The volume's entries without data, parents before children; links carry their target. */
function manifest(root: string): VolumeEntry[] {
  const out: VolumeEntry[] = [];
  const visit = (path: string, rel: string): void => {
    if (out.length >= MAX_ENTRIES) throw resourceExhausted(`volume ${root} has more than ${MAX_ENTRIES} entries`);
    const st = lstatBig(path);
    if (!st) return; // removed while walking
    const mode = Number(st.mode) & 0o777;
    if (st.isSymbolicLink()) {
      out.push({ path: rel, kind: 'symlink', mode, data: Buffer.from(readlink(path)), stamp: stampOf(st) });
    } else if (st.isFile()) {
      out.push({ path: rel, kind: 'file', mode, stamp: stampOf(st) });
    } else if (st.isDirectory()) {
      out.push({ path: rel, kind: 'dir', mode, stamp: stampOf(st) });
      let names: string[] = [];
      try {
        names = readdir(path).sort();
      } catch {
        // removed while walking
      }
      for (const name of names) {
        if (name.startsWith('.podvisor-tmp-')) continue;
        visit(join(path, name), rel === '' ? name : `${rel}/${name}`);
      }
    }
    // Sockets, fifos and device nodes stay in the guest.
  };
  visit(root, '');
  return out;
}

function readEntryFile(root: string, rel: string): VolumeEntry | undefined {
  let fd: number;
  try {
    fd = openSync(entryPath(root, rel), constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return undefined; // gone, or no longer a file
  }
  try {
    const st = fstatSync(fd, { bigint: true });
    if (!st.isFile()) return undefined;
    if (st.size > BigInt(MAX_READ_BYTES)) throw resourceExhausted(`${rel} is ${st.size} bytes, more than a copied volume file may have (${MAX_READ_BYTES})`);
    return { path: rel, kind: 'file', mode: Number(st.mode) & 0o777, data: readFileSync(fd), stamp: stampOf(st) };
  } finally {
    closeSync(fd);
  }
}

export async function readVolume(req: ReadVolumeRequest): Promise<ReadVolumeResponse> {
  const root = volumeRoot(req.volumeId);
  if (!lstat(root)) return { exists: false, entries: [] };
  if (!req.paths?.length) {
    const entries = manifest(root);
    if (!req.withData) return { exists: true, entries };
    // Changed files ride along with the manifest, so a small change reaches the host in one call.
    const known = new Map((req.known ?? []).map((e) => [e.path, e.stamp]));
    let bytes = 0;
    for (const [i, e] of entries.entries()) {
      if (e.kind !== 'file' || known.get(e.path) === e.stamp) continue;
      const size = Number((e.stamp ?? '').split(':')[2] ?? 0);
      if (bytes + size > MAX_READ_BYTES) continue; // the host asks for it by path
      let withData: VolumeEntry | undefined;
      try {
        withData = readEntryFile(root, e.path);
      } catch {
        continue; // grew past the bound: the host asks for it by path and hears why
      }
      if (!withData) continue;
      bytes += withData.data!.length;
      entries[i] = withData;
    }
    return { exists: true, entries };
  }
  const entries: VolumeEntry[] = [];
  let bytes = 0;
  for (const rel of req.paths) {
    const e = readEntryFile(root, rel);
    if (!e) continue;
    bytes += e.data!.length;
    if (bytes > MAX_READ_BYTES) throw resourceExhausted(`the files asked for exceed ${MAX_READ_BYTES} bytes in one answer`);
    entries.push(e);
  }
  return { exists: true, entries };
}

export async function removeVolume(req: RemoveVolumeRequest): Promise<void> {
  unwatch(req.volumeId);
  rm(volumeRoot(req.volumeId), { recursive: true, force: true });
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

export async function watchVolumes(req: WatchVolumesRequest): Promise<WatchVolumesResponse> {
  const changed = await waitForChanges(req);
  // The changed volumes' manifests (with new data) ride along, while the answer stays within one message.
  const reads: ReadVolumeResponse[] = [];
  const readIds: string[] = [];
  let bytes = 0;
  let entries = 0;
  for (const id of changed) {
    const known = req.known?.find((k) => k.volumeId === id);
    if (!known) continue;
    let res: ReadVolumeResponse;
    try {
      res = await readVolume({ ...known, paths: [], withData: true });
    } catch {
      continue; // the host's own ReadVolume hears why
    }
    const size = res.entries.reduce((n, e) => n + (e.data?.length ?? 0) + e.path.length + 64, 0);
    // The host decodes at most two full manifests' worth of entries per answer (src/agent-client/client.ts).
    if (bytes + size > MAX_READ_BYTES || entries + res.entries.length > 2 * MAX_ENTRIES) break;
    bytes += size;
    entries += res.entries.length;
    reads.push(res);
    readIds.push(id);
  }
  return { changed, reads, readIds };
}

async function waitForChanges(req: WatchVolumesRequest): Promise<string[]> {
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
