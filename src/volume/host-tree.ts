import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, readlink, rename, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { VolumeEntry } from '../agent-protocol/types.js';
import { failedPrecondition, resourceExhausted } from '../errors.js';

/**
 * A volume's tree on the host, as the copy share reads and writes it. Nothing
 * here follows a symlink below the volume root: links are copied as links (the
 * guest resolves them inside its own copy), and write-back checks every parent
 * on the way down, so a link the guest planted can never make podvisord read or
 * write a host path outside the volume.
 */

/** Bounds of one copied volume; a volume over them is refused, not cut short. */
export const COPY_LIMITS = {
  entries: 4096,
  /** One file (it must fit in one agent message). */
  fileBytes: 3 << 20,
  /** All files of one volume (the guest keeps them in RAM). */
  volumeBytes: 64 << 20,
};

/** A manifest: relative path -> entry without data (a link keeps its target). */
export type Manifest = Map<string, VolumeEntry & { size: number }>;

const stampOf = (st: { mtimeMs: number; ctimeMs: number; size: number; ino: number }) => `${st.mtimeMs}:${st.ctimeMs}:${st.size}:${st.ino}`;

/** Walks the host source of a volume (the root itself is followed, as a bind mount would). */
export async function hostManifest(root: string): Promise<Manifest> {
  const out: Manifest = new Map();
  let bytes = 0;
  const visit = async (path: string, rel: string, st: Awaited<ReturnType<typeof lstat>>): Promise<void> => {
    if (out.size >= COPY_LIMITS.entries) throw resourceExhausted(`volume ${root} has more than ${COPY_LIMITS.entries} entries, the most a copied volume may have`);
    const mode = Number(st.mode) & 0o777;
    const stamp = stampOf({ mtimeMs: Number(st.mtimeMs), ctimeMs: Number(st.ctimeMs), size: Number(st.size), ino: Number(st.ino) });
    if (st.isSymbolicLink()) {
      out.set(rel, { path: rel, kind: 'symlink', mode, data: Buffer.from(await readlink(path)), stamp, size: 0 });
    } else if (st.isFile()) {
      const size = Number(st.size);
      if (size > COPY_LIMITS.fileBytes) throw resourceExhausted(`${path} is ${size} bytes, more than a copied volume file may have (${COPY_LIMITS.fileBytes})`);
      bytes += size;
      if (bytes > COPY_LIMITS.volumeBytes) throw resourceExhausted(`volume ${root} holds more than ${COPY_LIMITS.volumeBytes} bytes, the most a copied volume may hold`);
      out.set(rel, { path: rel, kind: 'file', mode, stamp, size });
    } else if (st.isDirectory()) {
      out.set(rel, { path: rel, kind: 'dir', mode, stamp, size: 0 });
      for (const name of (await readdir(path).catch(() => [] as string[])).sort()) {
        const child = join(path, name);
        const cst = await lstat(child).catch(() => undefined);
        if (cst) await visit(child, rel === '' ? name : `${rel}/${name}`, cst);
      }
    }
    // Sockets, fifos and device nodes cannot be copied; they are left out.
  };
  await visit(root, '', await stat(root));
  return out;
}

/** A host file's contents, never through a link (it may have been swapped since the walk: then it is skipped). */
export async function readHostFile(root: string, rel: string): Promise<Uint8Array | undefined> {
  const fh = await open(rel === '' ? root : join(root, rel), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
  if (!fh) return undefined;
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > COPY_LIMITS.fileBytes) return undefined;
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/**
 * The host path of `rel` below `root` for writing: every parent must be a real
 * directory (created when missing), never a link. podvisord is the only writer
 * of what the guest sends, so the check is not raced by the guest.
 */
async function safeParent(root: string, rel: string, create = true, checked?: Set<string>): Promise<string> {
  const parts = rel.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) throw failedPrecondition(`volume entry ${JSON.stringify(rel)} is not a plain relative path`);
  let dir = root;
  for (const part of parts.slice(0, -1)) {
    dir = join(dir, part);
    if (checked?.has(dir)) continue;
    const st = await lstat(dir).catch(() => undefined);
    if (!st && !create) throw failedPrecondition(`${dir} is gone`);
    if (!st) await mkdir(dir, { mode: 0o755 });
    else if (!st.isDirectory()) throw failedPrecondition(`${dir} is not a directory (a link?): not writing through it`);
    checked?.add(dir);
  }
  return join(dir, parts[parts.length - 1]);
}

/**
 * Writes one entry the guest changed back to the host volume; links are not written back (see README).
 * `checked`: directories already found real during this write-back (a deep tree costs one lstat per directory, not per entry and level).
 */
export async function writeBack(root: string, e: VolumeEntry, checked?: Set<string>): Promise<void> {
  const mode = e.mode & 0o777;
  if (e.path === '') {
    if (e.kind !== 'file') return;
    // A single-file volume (the termination log): rewritten in place, as the guest's writes would be.
    const fh = await open(root, constants.O_WRONLY | constants.O_TRUNC | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      await fh.writeFile(e.data ?? new Uint8Array());
    } finally {
      await fh.close();
    }
    return;
  }
  const path = await safeParent(root, e.path, true, checked);
  const st = await lstat(path).catch(() => undefined);
  if (e.kind === 'dir') {
    if (!st?.isDirectory()) {
      if (st) await rm(path, { force: true });
      await mkdir(path, { mode });
    }
    checked?.add(path);
    return;
  }
  if (e.kind !== 'file') return;
  if (st?.isDirectory()) {
    await rm(path, { recursive: true, force: true });
    checked?.clear(); // what was below it is gone
  }
  const tmp = join(dirname(path), `.podvisor-tmp-${randomBytes(6).toString('hex')}`);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    await fh.writeFile(e.data ?? new Uint8Array());
    await fh.chmod(mode);
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** Removes what the guest removed; a link on the way is never followed. */
export async function removeBack(root: string, rel: string): Promise<void> {
  if (rel === '') return;
  const path = await safeParent(root, rel, false).catch(() => undefined);
  if (path) await rm(path, { recursive: true, force: true });
}
