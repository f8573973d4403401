import { createReadStream } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { failedPrecondition, notFound } from '../errors.js';
import { logger } from '../log.js';
import { syncDirectory, tempName } from '../util/atomic-file.js';
import { Digester, parseDigest } from './digest.js';

const log = logger('image.content');

/**
 * Content-addressed blob store under `<dir>/blobs/<algorithm>/<hex>`. A blob is written to a temp
 * file in `<dir>/ingest/` while its digest is computed, fsync'd, and renamed into place only when
 * the digest (and size, when known) match, so a blob that exists is always complete and correct.
 */
export class ContentStore {
  readonly blobsDir: string;
  readonly ingestDir: string;

  constructor(readonly dir: string) {
    this.blobsDir = join(dir, 'blobs');
    this.ingestDir = join(dir, 'ingest');
  }

  /** Creates the folders and, when asked, removes temp files a crash may have left behind. */
  async init(clearTemporary = true): Promise<void> {
    await mkdir(this.blobsDir, { recursive: true, mode: 0o700 });
    if (clearTemporary) await rm(this.ingestDir, { recursive: true, force: true });
    await mkdir(this.ingestDir, { recursive: true, mode: 0o700 });
  }

  blobPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.blobsDir, algorithm, hex);
  }

  async has(digest: string): Promise<boolean> {
    try {
      return (await lstat(this.blobPath(digest))).isFile();
    } catch {
      return false;
    }
  }

  async size(digest: string): Promise<number> {
    return (await stat(this.blobPath(digest))).size;
  }

  /**
   * Streams `source` into the store as blob `digest`. Throws FAILED_PRECONDITION (and keeps
   * nothing) when the content does not hash to `digest` or its size differs from `expectedSize`.
   * `what` names the blob in errors ("layer 2 of registry.k8s.io/pause:3.9").
   */
  async ingest(digest: string, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, what: string, expectedSize?: number): Promise<void> {
    const { algorithm } = parseDigest(digest);
    const tmp = tempName(this.ingestDir, 'blob');
    const hasher = new Digester(algorithm);
    let written = 0;
    try {
      const fd = await open(tmp, 'wx', 0o600);
      try {
        for await (const chunk of source) {
          written += chunk.length;
          if (expectedSize !== undefined && written > expectedSize) {
            throw failedPrecondition(`${what} (${digest}) is larger than the ${expectedSize} bytes its descriptor declares; nothing was stored`);
          }
          hasher.update(chunk);
          await fd.write(chunk);
        }
        await fd.sync();
      } finally {
        await fd.close();
      }
      if (expectedSize !== undefined && written !== expectedSize) {
        throw failedPrecondition(`${what} (${digest}) is ${written} bytes, its descriptor declares ${expectedSize}; nothing was stored`);
      }
      const actual = hasher.digest();
      if (actual !== digest) {
        throw failedPrecondition(`${what}: content digest mismatch, expected ${digest} but the data hashes to ${actual}; nothing was stored`);
      }
      const final = this.blobPath(digest);
      await mkdir(join(this.blobsDir, algorithm), { recursive: true, mode: 0o700 });
      await rename(tmp, final);
      await syncDirectory(join(this.blobsDir, algorithm));
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }

  /** Streams a blob whose digest is not known beforehand into the store; returns its sha256 digest. */
  async ingestUnknown(source: AsyncIterable<Uint8Array>, what: string): Promise<string> {
    const tmp = tempName(this.ingestDir, 'blob');
    const hasher = new Digester('sha256');
    try {
      const fd = await open(tmp, 'wx', 0o600);
      try {
        for await (const chunk of source) {
          hasher.update(chunk);
          await fd.write(chunk);
        }
        await fd.sync();
      } finally {
        await fd.close();
      }
      const digest = hasher.digest();
      await mkdir(join(this.blobsDir, 'sha256'), { recursive: true, mode: 0o700 });
      await rename(tmp, this.blobPath(digest));
      await syncDirectory(join(this.blobsDir, 'sha256'));
      return digest;
    } catch (e) {
      await rm(tmp, { force: true });
      throw failedPrecondition(`${what}: could not be stored: ${(e as Error).message}`, e);
    }
  }

  /** Stores an in-memory blob whose digest is already verified by the caller or computed here. */
  async put(digest: string, data: Uint8Array, what: string): Promise<void> {
    if (await this.has(digest)) {
      // Reused by a new image: fresh again for the sweep's grace period (L9).
      await utimes(this.blobPath(digest), new Date(), new Date()).catch(() => undefined);
      return;
    }
    await this.ingest(digest, [data], what, data.length);
  }

  async read(digest: string): Promise<Buffer> {
    try {
      return await readFile(this.blobPath(digest));
    } catch (e) {
      throw notFound(`blob ${digest} is not in the content store`, e);
    }
  }

  openRead(digest: string): Readable {
    return createReadStream(this.blobPath(digest));
  }

  async delete(digest: string): Promise<void> {
    await rm(this.blobPath(digest), { force: true });
  }

  /** Every stored blob digest. */
  async list(): Promise<string[]> {
    const out: string[] = [];
    for (const algorithm of await readdir(this.blobsDir).catch(() => [] as string[])) {
      for (const hex of await readdir(join(this.blobsDir, algorithm)).catch(() => [] as string[])) {
        out.push(`${algorithm}:${hex}`);
      }
    }
    return out;
  }

  /**
   * Removes every blob not in `keep`; returns the digests removed. Blobs
   * written within `graceMs` are spared (L9): another process (`podvisor image
   * import`) may have stored them for an image it has not recorded yet, and its
   * leases live in its own memory.
   */
  async sweep(keep: ReadonlySet<string>, graceMs = 0): Promise<string[]> {
    const removed: string[] = [];
    const cutoff = Date.now() - graceMs;
    for (const digest of await this.list()) {
      if (keep.has(digest)) continue;
      if (graceMs > 0) {
        const st = await stat(this.blobPath(digest)).catch(() => undefined);
        if (!st || st.mtimeMs > cutoff) continue;
      }
      await this.delete(digest);
      removed.push(digest);
    }
    if (removed.length > 0) log.info({ count: removed.length }, 'removed unreferenced blobs');
    return removed;
  }
}
