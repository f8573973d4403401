import type { VolumeEntry } from '../agent-protocol/types.js';
import { internal, resourceExhausted } from '../errors.js';
import { COPY_LIMITS } from './host-tree.js';

/**
 * What the host writes back of a writable copied volume, checked before any of
 * it is written. The answer comes from the guest, whose root can send anything:
 * the checks hold the host to the same bounds a copy in is held to
 * (COPY_LIMITS), and to the shape the real agent answers in (plain relative
 * paths, each parent listed as a directory, no path twice), so a guest can never
 * make podvisord write outside the volume, write more than one volume's bound,
 * or make a directory per path component of absurd paths.
 *
 * A guest that breaks the shape broke the copy protocol (INTERNAL: a real agent
 * never answers so); one over a bound gets RESOURCE_EXHAUSTED. Either way
 * nothing of that answer is written and the host keeps what it had.
 */

/** Longest entry path (Linux PATH_MAX) and path component (NAME_MAX), in bytes. */
const MAX_PATH_BYTES = 4096;
const MAX_NAME_BYTES = 255;
const KINDS = new Set(['dir', 'file', 'symlink']);

export interface WriteBackPlan {
  /** Directories the host does not have as they are now, parents first. */
  dirs: VolumeEntry[];
  /** Changed files whose data came with the answer. */
  files: VolumeEntry[];
  /** Changed files to ask for by path, with the size the guest's stamp claims. */
  fetch: Array<{ path: string; size: number }>;
  /** path -> stamp of every entry the guest has (links too, which are never written: listed so the host does not remove its own). */
  next: Map<string, string>;
  /** path -> bytes of every file the host holds once the plan is done (fetched ones: as claimed until they arrive). */
  sizes: Map<string, number>;
  /** What the host volume holds at most while the plan runs (each changed file at the larger of its old and new size). */
  heldBytes: number;
}

/** What the host last wrote back of a volume. */
export interface WrittenBack {
  stamps: Map<string, string>;
  sizes: Map<string, number>;
}

const shapeError = (hostPath: string, what: string) =>
  internal(`the guest's answer for volume ${hostPath} broke the volume copy protocol (${what}); nothing of it was used or written back. A guest agent does not answer so: the pod's guest may be compromised`);

/** Throws unless `rel` is "" or a plain relative path within the kernel's path bounds. */
export function checkEntryPath(hostPath: string, rel: string): void {
  if (rel === '') return;
  const why = rel.includes('\0') ? 'holds a NUL byte'
    : Buffer.byteLength(rel) > MAX_PATH_BYTES ? `is longer than ${MAX_PATH_BYTES} bytes`
      : rel.split('/').some((p) => p === '' || p === '.' || p === '..') ? 'is not a plain relative path'
        : rel.split('/').some((p) => Buffer.byteLength(p) > MAX_NAME_BYTES) ? `has a name longer than ${MAX_NAME_BYTES} bytes`
          : undefined;
  if (why) throw shapeError(hostPath, `entry ${JSON.stringify(rel.slice(0, 200))} ${why}`);
}

const parentOf = (rel: string) => (rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '');

/** A file's size as its stamp says (mtime:ctime:size:ino); a stamp that is not one is a protocol error. */
function claimedSize(hostPath: string, e: VolumeEntry): number {
  const field = (e.stamp ?? '').split(':')[2];
  const size = Number(field);
  if (field === undefined || !Number.isSafeInteger(size) || size < 0) throw shapeError(hostPath, `entry ${JSON.stringify(e.path.slice(0, 200))} has no size in its stamp`);
  return size;
}

export function overVolumeBytes(hostPath: string, bytes: number): Error {
  return resourceExhausted(`the guest's copy of volume ${hostPath} holds at least ${bytes} bytes, more than the ${COPY_LIMITS.volumeBytes} a copied volume may hold; `
    + 'nothing more of it is written back until the pod deletes some of it (the host keeps what it had)');
}

export function overFileBytes(hostPath: string, rel: string, bytes: number): Error {
  return resourceExhausted(`${JSON.stringify(rel.slice(0, 200))} in the guest's copy of volume ${hostPath} is ${bytes} bytes, more than the ${COPY_LIMITS.fileBytes} a copied volume file may have; `
    + 'nothing more of the volume is written back until the pod shrinks it (the host keeps what it had)');
}

/**
 * Checks the shape of any guest manifest of a volume (entry count, paths, kinds, no path twice); returns each path's kind.
 * A read-only volume's manifest only steers what the host pushes, but it is held to the same shape, so a guest's
 * answer is refused in the same words whatever the volume.
 */
export function checkManifest(hostPath: string, entries: VolumeEntry[]): Map<string, string> {
  if (entries.length > COPY_LIMITS.entries + 1) { // + the root
    throw resourceExhausted(`the guest's copy of volume ${hostPath} has ${entries.length} entries, more than the ${COPY_LIMITS.entries} a copied volume may have; `
      + 'nothing more of it is written back until the pod deletes some (the host keeps what it had)');
  }
  const kinds = new Map<string, string>();
  for (const e of entries) {
    if (typeof e.path !== 'string') throw shapeError(hostPath, 'an entry has no path');
    checkEntryPath(hostPath, e.path);
    if (!KINDS.has(e.kind)) throw shapeError(hostPath, `entry ${JSON.stringify(e.path.slice(0, 200))} has kind ${JSON.stringify(String(e.kind).slice(0, 40))}`);
    if (kinds.has(e.path)) throw shapeError(hostPath, `entry ${JSON.stringify(e.path.slice(0, 200))} is listed twice`);
    kinds.set(e.path, e.kind);
  }
  return kinds;
}

/** Checks a guest manifest of a writable volume against the bounds and the protocol, and says what to write. */
export function planWriteBack(hostPath: string, entries: VolumeEntry[], last: WrittenBack): WriteBackPlan {
  const kinds = checkManifest(hostPath, entries);
  const plan: WriteBackPlan = { dirs: [], files: [], fetch: [], next: new Map(), sizes: new Map(), heldBytes: 0 };
  let total = 0;
  for (const e of entries) {
    // A parent the manifest does not list would be made on the host per path component: one entry could make thousands.
    if (e.path !== '' && kinds.get(parentOf(e.path)) !== 'dir') throw shapeError(hostPath, `entry ${JSON.stringify(e.path.slice(0, 200))} has no directory listed as its parent`);
    if (e.kind === 'symlink') {
      // Links stay in the guest: one written on the host could point anywhere there. One the host
      // has (it came in with the copy) is kept: listed, so it is not taken for removed.
      plan.next.set(e.path, e.stamp ?? '');
      continue;
    }
    const unchanged = last.stamps.get(e.path) === e.stamp;
    if (e.kind === 'file') {
      const size = unchanged && last.sizes.has(e.path) ? last.sizes.get(e.path)! : e.data?.length ? e.data.length : claimedSize(hostPath, e);
      if (size > COPY_LIMITS.fileBytes) throw overFileBytes(hostPath, e.path, size);
      // Until a changed file is rewritten the host holds its old contents: the larger of the two counts.
      total += Math.max(size, last.sizes.get(e.path) ?? 0);
      if (total > COPY_LIMITS.volumeBytes) throw overVolumeBytes(hostPath, total);
      plan.sizes.set(e.path, size);
      if (!unchanged) {
        if (e.data?.length || claimedSize(hostPath, e) === 0) plan.files.push(e);
        else plan.fetch.push({ path: e.path, size });
      }
    } else if (!unchanged) {
      plan.dirs.push(e);
    }
    plan.next.set(e.path, e.stamp ?? '');
  }
  plan.heldBytes = total;
  return plan;
}

/**
 * Checks one answer to a by-path read against what was asked: only those paths,
 * each at most once, files only, each within the file bound. Returns the entries.
 */
export function checkFetched(hostPath: string, asked: Set<string>, got: VolumeEntry[]): VolumeEntry[] {
  const seen = new Set<string>();
  for (const e of got) {
    if (!asked.has(e.path) || seen.has(e.path)) throw shapeError(hostPath, `a read of files answered ${JSON.stringify(String(e.path).slice(0, 200))}, which was not asked for`);
    if (e.kind !== 'file') throw shapeError(hostPath, `a read of files answered ${JSON.stringify(e.path.slice(0, 200))} as kind ${JSON.stringify(String(e.kind).slice(0, 40))}`);
    const size = e.data?.length ?? 0;
    if (size > COPY_LIMITS.fileBytes) throw overFileBytes(hostPath, e.path, size);
    seen.add(e.path);
  }
  return got;
}
