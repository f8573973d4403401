import { constants } from 'node:fs';
import { chmod, chown, lchown, link, lstat, lutimes, mkdir, open, readdir, readlink, rm, symlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract, type Header } from 'tar-stream';
import { failedPrecondition, PodvisorError, resourceExhausted } from '../errors.js';
import { logger } from '../log.js';
import { decodeLayer } from './decompress.js';
import { Digester, parseDigest } from './digest.js';

const log = logger('image.unpack');

/** Cost charged per tar entry on top of its data and header, so millions of empty files also hit the limit. */
export const ENTRY_OVERHEAD_BYTES = 512;
/** Longest entry or link name accepted (PATH_MAX). tar-stream allows PAX names of up to 4 MiB (C2). */
export const MAX_ENTRY_NAME = 4096;
/** Skipped entries named in the notes (and the log); beyond this only counted (C2). */
export const MAX_NOTED_ENTRIES = 32;
const MAX_SYMLINK_HOPS = 40;
const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_WHITEOUT = '.wh..wh..opq';

/** The default of `[images] max_unpacked_bytes`: the one default, used by the config and the image service. */
export const DEFAULT_MAX_UNPACKED_BYTES = 8 * 1024 ** 3;

/**
 * A limit on the bytes one image may unpack to (file data plus ENTRY_OVERHEAD_BYTES per entry),
 * shared by all of its layers: the guard against tar bombs, including files that claim to be huge.
 */
export class UnpackBudget {
  used = 0;
  /** Decoded tar bytes read (headers, padding, zero blocks, skipped payloads: all cost CPU). */
  decoded = 0;
  constructor(readonly maxBytes: number) {}

  /**
   * Counts decoded layer bytes against twice the unpack limit (L6): tar
   * overhead legitimately adds a little, but a small gzip of zero blocks or
   * of payloads the unpacker skips must not cost unbounded CPU.
   */
  chargeDecoded(bytes: number, what: string): void {
    this.decoded += bytes;
    if (this.decoded > 2 * this.maxBytes) {
      throw resourceExhausted(`${what} decodes to more than ${2 * this.maxBytes} bytes (twice image.maxUnpackedBytes); refusing the layer`);
    }
  }
  charge(bytes: number, what: string): void {
    if (this.used + bytes > this.maxBytes) {
      throw resourceExhausted(`${what} would take the unpacked image past its limit of ${this.maxBytes} bytes (config [images] max_unpacked_bytes); refusing the layer`);
    }
    this.used += bytes;
  }
}

/** Things the unpacker skipped and says so (device nodes, FIFOs, extended attributes): the first few by name, all by count. */
export interface UnpackNotes {
  skipped: string[];
  skippedCount: number;
}

function noteSkipped(notes: UnpackNotes, what: string): void {
  notes.skippedCount++;
  if (notes.skipped.length < MAX_NOTED_ENTRIES) notes.skipped.push(what);
}

export interface LayerSource {
  /** "layer 2/3 (sha256:…) of registry.k8s.io/pause:3.9", for messages */
  readonly name: string;
  /** the layer blob as stored (compressed or not) */
  readonly open: () => AsyncIterable<Uint8Array>;
  /** digest of the decoded tar stream (the config's rootfs.diff_ids entry), checked while unpacking */
  readonly diffId?: string;
}

/**
 * Unpacks an image's layers, in order, into the empty folder `root`. Each layer is streamed
 * through its decoder straight into the tree. The rules are the security boundary:
 *  - entry names with `..` components or absolute names are refused;
 *  - every parent directory is resolved one component at a time with lstat; a symlink on the way is
 *    followed only when its target is relative and stays inside `root`, otherwise the layer is refused;
 *  - the last component is never followed: files are created with O_EXCL|O_NOFOLLOW, links and
 *    symlinks replace whatever was there;
 *  - hard links must point at an existing non-directory inside `root`;
 *  - device nodes and FIFOs are skipped (noted); GNU sparse entries are refused;
 *  - the budget caps the total size.
 * Whiteouts (`.wh.<name>`, `.wh..wh..opq`) remove what lower layers put there. Modes (with
 * setuid/setgid/sticky), uid/gid and mtimes are kept; directory mtimes are set last.
 */
export async function unpackLayers(root: string, layers: readonly LayerSource[], budget: UnpackBudget): Promise<UnpackNotes> {
  const notes: UnpackNotes = { skipped: [], skippedCount: 0 };
  const dirTimes = new Map<string, Date>();
  const rootStat = await lstat(root);
  if (!rootStat.isDirectory()) throw failedPrecondition(`unpack target ${root} is not a directory`);
  for (const layer of layers) {
    await applyLayer(root, layer, budget, notes, dirTimes);
  }
  // deepest first, so setting a child's time does not disturb its parent's afterwards
  const dirs = [...dirTimes.entries()].sort((a, b) => b[0].split('/').length - a[0].split('/').length);
  for (const [rel, mtime] of dirs) {
    // A later entry may have put a symlink where the directory (or one of its parents) was (M1):
    // set the time only when every component is still a real directory inside root.
    if (!(await isRealDirectoryPath(root, rel))) continue;
    await utimes(join(root, rel), mtime, mtime).catch(() => {}); // removed by a later whiteout
  }
  if (notes.skippedCount > 0) {
    log.info({ skipped: notes.skippedCount, first: notes.skipped.slice(0, 5) }, 'skipped entries the VM disk cannot carry (device nodes, FIFOs, xattrs)');
  }
  return notes;
}

async function applyLayer(root: string, layer: LayerSource, budget: UnpackBudget, notes: UnpackNotes, dirTimes: Map<string, Date>): Promise<void> {
  const diffHasher = layer.diffId ? new Digester(parseDigest(layer.diffId).algorithm) : undefined;
  async function* hashed(): AsyncGenerator<Buffer> {
    for await (const chunk of decodeLayer(layer.open(), layer.name)) {
      budget.chargeDecoded(chunk.length, layer.name);
      diffHasher?.update(chunk);
      yield chunk;
    }
  }
  const extractor = tarExtract();
  const feeding = pipeline(Readable.from(hashed()), extractor);
  feeding.catch(() => {}); // a feeding error also ends the iteration below with that error
  const createdHere = new Set<string>();
  const ctx: LayerContext = { root, layer: layer.name, budget, notes, dirTimes, createdHere };
  try {
    for await (const entry of extractor) {
      await applyEntry(ctx, entry.header, entry as unknown as AsyncIterable<Buffer>);
      entry.resume(); // any data the handler did not need
    }
    await feeding;
  } catch (e) {
    extractor.destroy();
    if (e instanceof PodvisorError) throw e;
    throw failedPrecondition(`${layer.name} is not a valid tar stream: ${(e as Error).message}`, e);
  }
  if (diffHasher && layer.diffId) {
    const actual = diffHasher.digest();
    if (actual !== layer.diffId) {
      throw failedPrecondition(`${layer.name}: uncompressed content hashes to ${actual}, but the image config says ${layer.diffId}`);
    }
  }
}

interface LayerContext {
  readonly root: string;
  readonly layer: string;
  readonly budget: UnpackBudget;
  readonly notes: UnpackNotes;
  readonly dirTimes: Map<string, Date>;
  /** relative paths this layer created: whiteouts only remove what lower layers made */
  readonly createdHere: Set<string>;
}

const refuse = (ctx: LayerContext, entry: string, why: string) =>
  failedPrecondition(`${ctx.layer}: refusing entry "${entry}": ${why}; the layer may be malicious and was not unpacked`);

/** Splits an entry name into clean components; refuses absolute names and `..`. */
export function entryComponents(name: string): string[] | { error: string } {
  if (name.startsWith('/')) return { error: 'absolute paths are not allowed in a layer' };
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return { error: '".." path components are not allowed in a layer' };
  if (parts.some((p) => p.includes('\0'))) return { error: 'NUL in a path' };
  return parts;
}

async function applyEntry(ctx: LayerContext, h: Header, data: AsyncIterable<Buffer>): Promise<void> {
  // Names first, before anything keeps or logs them (C2): a device node is never created, so
  // nothing else would stop a 4 MiB name.
  if (h.name.length > MAX_ENTRY_NAME || (h.linkname ?? '').length > MAX_ENTRY_NAME) {
    throw refuse(ctx, `${h.name.slice(0, 64)}…`, `an entry or link name longer than ${MAX_ENTRY_NAME} characters`);
  }
  const name = h.name;
  const parts = entryComponents(name);
  if (!Array.isArray(parts)) throw refuse(ctx, name, parts.error);
  // Every entry costs its header (names, PAX records), whatever its type, and its data when kept.
  let headerBytes = name.length + (h.linkname ?? '').length;
  for (const [k, v] of Object.entries(h.pax ?? {})) headerBytes += k.length + String(v).length;
  const dataBytes = h.type === 'file' || h.type === 'contiguous-file' ? h.size ?? 0 : 0;
  ctx.budget.charge(ENTRY_OVERHEAD_BYTES + headerBytes + dataBytes, `entry "${name}" of ${ctx.layer}`);
  if (h.pax && Object.keys(h.pax).some((k) => k.startsWith('GNU.sparse'))) throw refuse(ctx, name, 'sparse files are not supported');
  const xattrs = h.pax ? Object.keys(h.pax).filter((k) => k.startsWith('SCHILY.xattr.')) : [];
  if (xattrs.length > 0) {
    // Node has no setxattr: file capabilities and other xattrs are not carried into the disk yet
    noteSkipped(ctx.notes, `${parts.join('/')} (xattrs ${xattrs.map((k) => k.slice('SCHILY.xattr.'.length, 'SCHILY.xattr.'.length + 64)).slice(0, 8).join(', ')})`);
  }
  if (parts.length === 0) return; // the layer's own root ("./")

  const base = parts[parts.length - 1]!;
  const parent = await resolveInRoot(ctx, name, parts.slice(0, -1), true);

  if (base === OPAQUE_WHITEOUT) {
    const dir = join(ctx.root, ...parent);
    for (const child of await readdir(dir)) {
      const rel = [...parent, child].join('/');
      if (!ctx.createdHere.has(rel)) await rm(join(dir, child), { recursive: true, force: true });
    }
    return;
  }
  if (base.startsWith(WHITEOUT_PREFIX)) {
    if (base.startsWith(WHITEOUT_PREFIX + WHITEOUT_PREFIX)) return; // aufs metadata (.wh..wh.plnk etc.)
    const victim = base.slice(WHITEOUT_PREFIX.length);
    if (victim === '' || victim === '.' || victim === '..') throw refuse(ctx, name, 'whiteout of an invalid name');
    const rel = [...parent, victim].join('/');
    if (!ctx.createdHere.has(rel)) await rm(join(ctx.root, ...parent, victim), { recursive: true, force: true });
    return;
  }

  const relParts = [...parent, base];
  const rel = relParts.join('/');
  const target = join(ctx.root, ...relParts);
  const existing = await lstat(target).catch(() => undefined);
  const mode = (h.mode ?? 0o644) & 0o7777;
  const uid = h.uid ?? 0;
  const gid = h.gid ?? 0;
  const mtime = h.mtime ?? new Date(0);

  switch (h.type) {
    case 'directory': {
      if (existing && !existing.isDirectory()) await rm(target, { force: true });
      if (!existing || !existing.isDirectory()) await mkdir(target, { mode: 0o700 });
      await setOwner(() => chown(target, uid, gid));
      await chmod(target, mode);
      ctx.dirTimes.set(rel, mtime);
      break;
    }
    case 'file':
    case 'contiguous-file': {
      if (existing) await rm(target, { recursive: true, force: true });
      const fd = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      try {
        for await (const chunk of data) await fd.write(chunk);
        await setOwner(() => fd.chown(uid, gid));
        await fd.chmod(mode); // after chown, which clears setuid/setgid
        await fd.utimes(mtime, mtime);
      } finally {
        await fd.close();
      }
      break;
    }
    case 'symlink': {
      if (existing) await rm(target, { recursive: true, force: true });
      // the target is only data here: it is never followed while unpacking
      await symlink(h.linkname ?? '', target);
      await setOwner(() => lchown(target, uid, gid));
      await lutimes(target, mtime, mtime);
      break;
    }
    case 'link': {
      const linkParts = entryComponents(h.linkname ?? '');
      if (!Array.isArray(linkParts) || linkParts.length === 0) {
        throw refuse(ctx, name, `hard link target "${h.linkname}" is outside the image root`);
      }
      const linkParent = await resolveInRoot(ctx, name, linkParts.slice(0, -1), false);
      const source = join(ctx.root, ...linkParent, linkParts[linkParts.length - 1]!);
      const sourceStat = await lstat(source).catch(() => undefined);
      if (!sourceStat) throw refuse(ctx, name, `hard link target "${h.linkname}" does not exist in the image`);
      if (sourceStat.isDirectory()) throw refuse(ctx, name, `hard link target "${h.linkname}" is a directory`);
      if (source === target) break;
      if (existing) await rm(target, { recursive: true, force: true });
      await link(source, target); // link(2) does not follow a symlink source: the link stays inside root
      break;
    }
    case 'character-device':
    case 'block-device':
    case 'fifo': {
      noteSkipped(ctx.notes, `${rel} (${h.type})`);
      return;
    }
    default:
      throw refuse(ctx, name, `unsupported tar entry type "${String(h.type)}" (GNU sparse or another extension)`);
  }
  ctx.createdHere.add(rel);
}

/**
 * Resolves directory components below `root` without ever leaving it, returning the real
 * (symlink-free) components. Missing directories are created (root-owned, 0755) when `create`.
 */
async function resolveInRoot(ctx: LayerContext, entry: string, parts: readonly string[], create: boolean): Promise<string[]> {
  const resolved: string[] = [];
  const queue = [...parts];
  let hops = 0;
  while (queue.length > 0) {
    const c = queue.shift()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (resolved.length === 0) throw refuse(ctx, entry, 'a symlink on its path leads out of the image root');
      resolved.pop();
      continue;
    }
    const here = join(ctx.root, ...resolved, c);
    const st = await lstat(here).catch(() => undefined);
    if (!st) {
      if (!create) throw refuse(ctx, entry, `"${[...resolved, c].join('/')}" does not exist`);
      await mkdir(here, { mode: 0o755 });
      resolved.push(c);
      ctx.createdHere.add(resolved.join('/'));
      continue;
    }
    if (st.isSymbolicLink()) {
      if (++hops > MAX_SYMLINK_HOPS) throw refuse(ctx, entry, 'too many levels of symlinks');
      const target = await readlink(here);
      if (target.startsWith('/')) {
        throw refuse(ctx, entry, `"${[...resolved, c].join('/')}" is a symlink to the absolute path ${target}; writing through it could leave the image root`);
      }
      queue.unshift(...target.split('/'));
      continue;
    }
    if (!st.isDirectory()) throw refuse(ctx, entry, `"${[...resolved, c].join('/')}" is not a directory`);
    resolved.push(c);
  }
  return resolved;
}

/** Whether every component of `rel` below `root` is a directory, none a symlink. */
async function isRealDirectoryPath(root: string, rel: string): Promise<boolean> {
  let here = root;
  for (const c of rel.split('/')) {
    here = join(here, c);
    const st = await lstat(here).catch(() => undefined);
    if (!st || !st.isDirectory()) return false;
  }
  return true;
}

let ownershipWarned = false;
/** chown, tolerating EPERM only when podvisor runs unprivileged (then files keep its own ids). */
async function setOwner(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EPERM' && process.getuid?.() !== 0) {
      if (!ownershipWarned) log.warn('not running as root: unpacked files keep podvisor\'s own uid/gid');
      ownershipWarned = true;
      return;
    }
    throw e;
  }
}
