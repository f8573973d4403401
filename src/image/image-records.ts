import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { failedPrecondition, unavailable } from '../errors.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import type { Descriptor } from './manifest.js';

/** What podvisor remembers about one image (keyed by its id, the config digest). */
export interface ImageRecord {
  readonly id: string;
  repoTags: string[];
  repoDigests: string[];
  /** the platform manifest the image was built from */
  readonly manifestDigest: string;
  readonly layers: readonly Pick<Descriptor, 'digest' | 'mediaType' | 'size'>[];
  readonly diffIds: readonly string[];
  /** every blob this image keeps alive in the content store (indexes, manifest, config, layers) */
  blobs: string[];
  /** manifest + config + layers, compressed, as containerd reports it */
  readonly size: number;
  readonly createdAt: string;
}

interface RecordsFile {
  readonly version: 1;
  readonly images: ImageRecord[];
}

/**
 * The image table, kept in `images.json` (written atomically). It is reloaded when the file
 * changed on disk, so an `image import` run by the CLI shows up in a running daemon.
 */
export class ImageRecords {
  private images = new Map<string, ImageRecord>();
  private loadedStamp = '';
  private lock: Promise<unknown> = Promise.resolve();

  constructor(readonly file: string) {}

  /**
   * Reloads the table when the file changed on disk. The change check (inode, size, times) can miss
   * a rewrite within one clock tick that reuses the inode, so writers pass `force`.
   */
  async refresh(force = false): Promise<void> {
    const stamp = await fileStamp(this.file);
    if (stamp === this.loadedStamp && !force) return;
    if (stamp === 'missing') {
      this.images = new Map();
    } else {
      let parsed: RecordsFile;
      try {
        parsed = JSON.parse(await readFile(this.file, 'utf8'));
      } catch (e) {
        throw failedPrecondition(`image table ${this.file} is unreadable (${(e as Error).message}); move it away to start with an empty image store`, e);
      }
      this.images = new Map(parsed.images.map((r) => [r.id, r]));
    }
    this.loadedStamp = stamp;
  }

  all(): ImageRecord[] {
    return [...this.images.values()];
  }

  get(id: string): ImageRecord | undefined {
    return this.images.get(id);
  }

  /**
   * Runs a change to the table and saves it. Changes are serialised in this process, and across
   * processes (the daemon and `podvisor image import`) by a lock file next to the table.
   */
  async update<T>(change: (images: Map<string, ImageRecord>) => T): Promise<T> {
    const run = this.lock.then(() => withLockFile(`${this.file}.lock`, async () => {
      await this.refresh(true);
      const result = change(this.images);
      const body: RecordsFile = { version: 1, images: [...this.images.values()] };
      await writeFileAtomic(this.file, JSON.stringify(body, null, 1) + '\n');
      this.loadedStamp = await fileStamp(this.file);
      return result;
    }));
    this.lock = run.catch(() => {});
    return run;
  }
}

async function fileStamp(file: string): Promise<string> {
  try {
    const st = await stat(file, { bigint: true });
    return `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch {
    return 'missing';
  }
}

const LOCK_WAIT_MS = 30_000;
const EMPTY_LOCK_STALE_MS = 5_000;

/**
 * Holds `path` (created with O_EXCL, holding our pid) while `fn` runs. A lock whose pid is gone
 * (a crashed process) is taken over; a live holder is waited for, up to LOCK_WAIT_MS.
 */
async function withLockFile<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await writeFile(path, String(process.pid), { flag: 'wx', mode: 0o600 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = Number((await readFile(path, 'utf8').catch(() => '')).trim());
      // an empty file is a lock being taken right now (created, pid not yet written), unless it is old
      const age = Date.now() - ((await stat(path).catch(() => undefined))?.mtimeMs ?? Date.now());
      if ((holder > 0 && !processAlive(holder)) || (!holder && age > EMPTY_LOCK_STALE_MS)) {
        await rm(path, { force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw unavailable(`the image table is locked by process ${holder || '(unknown)'} (${path}) for more than ${LOCK_WAIT_MS / 1000} s; remove the file if no podvisor process is running`);
      }
      await sleep(20);
    }
  }
  try {
    return await fn();
  } finally {
    await rm(path, { force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
