import { chmod, lstat, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { privateDir } from '../util/private-dir.js';
import { join } from 'node:path';
import { failedPrecondition, isPodvisorError, messageOf, notFound, PodvisorError } from '../errors.js';
import { logger } from '../log.js';
import { credentialKey, credentialsFrom, type RegistryAuth } from './auth.js';
import { ContentStore } from './content-store.js';
import { parseDigest } from './digest.js';
import { buildErofs } from './erofs.js';
import { ImageRecords, type ImageRecord } from './image-records.js';
import type { ImageConfig } from './manifest.js';
import { fetchImage, type FetchedImage } from './puller.js';
import { digestedName, formatReference, isDigest, parseReference, repositoryName, taggedName, type ImageReference } from './reference.js';
import { RegistryClient } from './registry-client.js';
import { EMPTY_REGISTRY_CONFIG, type RegistryConfig } from './registry-config.js';
import { endpointsFor } from './registry-endpoints.js';
import { SingleFlight } from './single-flight.js';
import { TransferStats } from './transfer-stats.js';
import { imagePullSeconds, imagePullsTotal } from '../metrics/metrics.js';
import { DEFAULT_MAX_UNPACKED_BYTES, UnpackBudget, unpackLayers } from './unpack.js';

const log = logger('image');

/** How old an unreferenced blob must be before a full garbage sweep removes it (L9). */
export const FULL_SWEEP_GRACE_MS = 60 * 60 * 1000;

export interface ImageServiceOptions {
  /** podvisor's state root; image data lives in `<root>/images/` */
  readonly root: string;
  readonly registry?: RegistryConfig;
  /** limit on one image's unpacked size (tar bomb guard) */
  readonly maxUnpackedBytes?: number;
  /** per-request idle timeout towards registries */
  readonly requestTimeoutMs?: number;
  /** attempts per registry request (network errors, 429, 5xx) */
  readonly requestAttempts?: number;
  readonly retryBackoffMs?: number;
  readonly layerConcurrency?: number;
}

/** An image as the rest of podvisor sees it. */
export interface ImageInfo {
  readonly id: string;
  readonly repoTags: readonly string[];
  readonly repoDigests: readonly string[];
  readonly size: number;
  /** the `config` section of the OCI image config: Entrypoint, Cmd, Env, WorkingDir, User, … */
  readonly config: NonNullable<ImageConfig['config']>;
  /** the whole OCI image config document */
  readonly imageConfig: ImageConfig;
  /** from `config.User`: a numeric user gives uid, a name gives username (neither when unset) */
  readonly uid?: number;
  readonly username?: string;
  readonly manifestDigest: string;
  readonly createdAt: string;
}

export interface ImageFsUsage {
  readonly mountpoint: string;
  readonly usedBytes: number;
  readonly inodesUsed: number;
  /** nanoseconds since the epoch */
  readonly timestamp: bigint;
}

/**
 * Images for podvisor: pull from registries (mirrors from config), keep blobs in a
 * content-addressed store, and make one read-only erofs disk per image id. Concurrent pulls of the
 * same reference share one run; concurrent requests for the same disk share one conversion.
 */
export class ImageService {
  readonly dir: string;
  readonly store: ContentStore;
  readonly records: ImageRecords;
  readonly disksDir: string;
  readonly unpackDir: string;
  /** bytes received from registries since start (or the last reset) */
  readonly transfer = new TransferStats();
  private readonly registry: RegistryConfig;
  private readonly pulls = new SingleFlight<string>();
  private readonly blobFlights = new SingleFlight<void>();
  private readonly conversions = new SingleFlight<string>();
  private readonly leases = new Set<Set<string>>();
  private readonly configCache = new Map<string, ImageConfig>();

  constructor(private readonly opts: ImageServiceOptions) {
    this.dir = join(opts.root, 'images');
    this.store = new ContentStore(this.dir);
    this.records = new ImageRecords(join(this.dir, 'images.json'));
    this.disksDir = join(this.dir, 'disks');
    this.unpackDir = join(this.dir, 'unpack');
    this.registry = opts.registry ?? EMPTY_REGISTRY_CONFIG;
  }

  /**
   * Creates the folders. The daemon (`clearTemporary`, the default) also clears what an
   * interrupted run left: temp files and unpack trees. The CLI must not: a running daemon may be
   * writing them.
   */
  async init({ clearTemporary = true }: { clearTemporary?: boolean } = {}): Promise<void> {
    privateDir(this.dir); // its mode even when it pre-exists (L7): unpack trees hold tenant setuid files
    await this.store.init(clearTemporary);
    privateDir(this.disksDir);
    if (clearTemporary) {
      await rm(this.unpackDir, { recursive: true, force: true });
      for (const f of await readdir(this.disksDir)) if (f.endsWith('.tmp')) await rm(join(this.disksDir, f), { force: true });
    }
    privateDir(this.unpackDir);
    await this.records.refresh();
  }

  /**
   * Pulls `reference` and returns the image id. The image is converted to its erofs disk before
   * it is recorded, so a pulled image is always usable; on failure nothing new is kept.
   */
  async pull(reference: string, auth?: RegistryAuth | null): Promise<string> {
    const ref = parseReference(reference);
    const credentials = credentialsFrom(auth);
    // concurrent pulls share one run only when they carry the same credentials
    const started = performance.now();
    try {
      const id = await this.pulls.run(JSON.stringify([formatReference(ref), credentialKey(credentials)]), () =>
        this.withLease(async (lease) => this.commit(await this.fetchFromEndpoints(ref, credentials, lease), ref)));
      imagePullsTotal.inc({ result: 'success' });
      imagePullSeconds.observe((performance.now() - started) / 1000);
      return id;
    } catch (e) {
      imagePullsTotal.inc({ result: 'failure' });
      throw e;
    }
  }

  /**
   * Runs `fn` with a lease: blobs whose digests it adds are safe from garbage collection until it
   * ends. When it fails, everything it stored that no image needs is removed again.
   */
  async withLease<T>(fn: (lease: Set<string>) => Promise<T>): Promise<T> {
    const lease = new Set<string>();
    this.leases.add(lease);
    try {
      return await fn(lease);
    } catch (e) {
      this.leases.delete(lease);
      // only what this run touched: another process (the CLI, the daemon) may be storing blobs too
      await this.collectGarbage(lease).catch((gcError) => log.warn({ err: messageOf(gcError) }, 'garbage collection after a failed pull or import failed'));
      throw e;
    } finally {
      this.leases.delete(lease);
    }
  }

  private async fetchFromEndpoints(ref: ImageReference, credentials: ReturnType<typeof credentialsFrom>, lease: Set<string>): Promise<FetchedImage> {
    const name = formatReference(ref);
    const failures: { endpoint: string; error: unknown }[] = [];
    for (const endpoint of endpointsFor(ref.domain, this.registry)) {
      const client = new RegistryClient({
        baseUrl: endpoint.baseUrl,
        repository: ref.path,
        internalHosts: this.registry.internalHosts ?? [],
        ...(credentials ? { credentials } : {}),
        ...(this.opts.requestTimeoutMs !== undefined ? { timeoutMs: this.opts.requestTimeoutMs } : {}),
        ...(this.opts.requestAttempts !== undefined ? { attempts: this.opts.requestAttempts } : {}),
        ...(this.opts.retryBackoffMs !== undefined ? { backoffMs: this.opts.retryBackoffMs } : {}),
        stats: this.transfer,
      });
      try {
        const started = Date.now();
        const fetched = await fetchImage(
          {
            store: this.store, blobFlights: this.blobFlights, lease, layerConcurrency: this.opts.layerConcurrency ?? 3,
            maxImageBytes: this.opts.maxUnpackedBytes ?? DEFAULT_MAX_UNPACKED_BYTES,
            trustCachedDigests: this.registry.trustCachedDigests === true,
          },
          client, ref,
        );
        log.info({ image: name, endpoint: endpoint.baseUrl, mirror: endpoint.mirror, ms: Date.now() - started }, 'image fetched');
        return fetched;
      } catch (e) {
        log.warn({ image: name, endpoint: endpoint.baseUrl, err: messageOf(e) }, 'pull from endpoint failed');
        failures.push({ endpoint: endpoint.baseUrl, error: e });
      }
    }
    throw pullError(name, failures);
  }

  /** Converts a fetched image to its disk, then records it under `ref` (tags move to the new image). */
  async commit(fetched: FetchedImage, ref?: ImageReference): Promise<string> {
    const id = fetched.configDigest;
    this.configCache.set(id, fetched.config);
    await this.convert(id, fetched.manifest.layers, fetched.config.rootfs.diff_ids, ref ? formatReference(ref) : id);
    const tag = ref ? taggedName(ref) : undefined;
    const digest = ref && fetched.topDigest ? digestedName(ref, fetched.topDigest) : undefined;
    const m = fetched.manifest;
    await this.records.update((images) => {
      if (tag) {
        for (const other of images.values()) if (other.id !== id) other.repoTags = other.repoTags.filter((t) => t !== tag);
      }
      const existing = images.get(id);
      const record: ImageRecord = existing ?? {
        id,
        repoTags: [],
        repoDigests: [],
        manifestDigest: fetched.manifestDigest,
        layers: m.layers.map((l) => ({ digest: l.digest, mediaType: l.mediaType, size: l.size })),
        diffIds: [...fetched.config.rootfs.diff_ids],
        blobs: [],
        size: m.config.size + m.layers.reduce((sum, l) => sum + l.size, 0) + fetched.manifestSize,
        createdAt: new Date().toISOString(),
      };
      if (tag && !record.repoTags.includes(tag)) record.repoTags.push(tag);
      if (digest && !record.repoDigests.includes(digest)) record.repoDigests.push(digest);
      record.blobs = [...new Set([...record.blobs, ...fetched.blobs])];
      images.set(id, record);
    });
    log.info({ image: ref ? formatReference(ref) : id, id }, 'image stored');
    return id;
  }

  /** The image a reference (tag or digest form), a full id, a bare hex id or a unique id prefix names. */
  async get(refOrId: string): Promise<ImageInfo | undefined> {
    const record = await this.resolve(refOrId);
    return record ? this.info(record) : undefined;
  }

  /** Like `get`, for CRI ImageStatus (undefined, not an error, for a missing image). */
  async status(refOrId: string): Promise<ImageInfo | undefined> {
    return this.get(refOrId);
  }

  /** All images, or the one a filter reference names. */
  async list(filter?: { image?: string } | null): Promise<ImageInfo[]> {
    await this.records.refresh();
    if (filter?.image) {
      const one = await this.get(filter.image);
      return one ? [one] : [];
    }
    return Promise.all(this.records.all().map((r) => this.info(r)));
  }

  /**
   * Removes an image named by id, tag or digest, with all its names (as containerd's CRI does),
   * its disk, and every blob no other image needs. Returns false when there was no such image.
   */
  async remove(refOrId: string): Promise<boolean> {
    const record = await this.resolve(refOrId);
    if (!record) return false;
    // a disk being built now would appear after the removal: let it finish, then remove it too
    await this.conversions.pending(record.id)?.catch(() => {});
    await this.records.update((images) => { images.delete(record.id); });
    this.configCache.delete(record.id);
    await rm(this.diskPath(record.id), { force: true });
    // Only this image's blobs (those no other image or pull needs): a full sweep would also
    // take blobs a concurrent `podvisor image import` (another process) stored but has not recorded yet (L9).
    await this.collectGarbage(new Set(record.blobs));
    log.info({ id: record.id, tags: record.repoTags }, 'image removed');
    return true;
  }

  /** Disk use of the image store, for CRI ImageFsInfo. */
  async fsInfo(): Promise<ImageFsUsage> {
    let usedBytes = 0;
    let inodesUsed = 0;
    const walk = async (dir: string): Promise<void> => {
      for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
        const p = join(dir, entry.name);
        const st = await lstat(p).catch(() => undefined);
        if (!st) continue;
        inodesUsed++;
        usedBytes += st.blocks * 512;
        if (entry.isDirectory()) await walk(p);
      }
    };
    await walk(this.dir);
    return { mountpoint: this.dir, usedBytes, inodesUsed, timestamp: BigInt(Date.now()) * 1_000_000n };
  }

  /** Path of the image's read-only erofs disk, building it when missing (once for concurrent callers). */
  async ensureDisk(imageId: string): Promise<string> {
    const record = await this.resolve(imageId);
    if (!record) throw notFound(`image "${imageId}" is not present; pull it first`);
    return this.convert(record.id, record.layers, record.diffIds, record.repoTags[0] ?? record.id);
  }

  diskPath(imageId: string): string {
    return join(this.disksDir, `${parseDigest(imageId).hex}.erofs`);
  }

  private convert(id: string, layers: ImageRecord['layers'], diffIds: readonly string[], name: string): Promise<string> {
    const disk = this.diskPath(id);
    return this.conversions.run(id, async () => {
      if (await lstat(disk).then((s) => s.isFile(), () => false)) return disk;
      for (const l of layers) {
        if (!(await this.store.has(l.digest))) {
          throw failedPrecondition(`layer ${l.digest} of ${name} is missing from the content store (${this.store.blobsDir}); remove the image and pull it again`);
        }
      }
      const started = Date.now();
      const tree = await mkdtemp(join(this.unpackDir, `${parseDigest(id).hex.slice(0, 12)}-`));
      try {
        // mkdtemp makes 0700; the tree's root becomes the container's "/", which must be 0755
        await chmod(tree, 0o755);
        const budget = new UnpackBudget(this.opts.maxUnpackedBytes ?? DEFAULT_MAX_UNPACKED_BYTES);
        const notes = await unpackLayers(tree, layers.map((l, i) => ({
          name: `layer ${i + 1}/${layers.length} (${l.digest}) of ${name}`,
          open: () => this.store.openRead(l.digest),
          diffId: diffIds[i]!,
        })), budget);
        const unpacked = Date.now();
        await buildErofs(tree, disk);
        log.info({ image: name, id, unpackMs: unpacked - started, mkfsMs: Date.now() - unpacked, bytes: budget.used, skipped: notes.skippedCount }, 'erofs disk ready');
        return disk;
      } finally {
        await rm(tree, { recursive: true, force: true });
      }
    });
  }

  /**
   * Deletes blobs that no recorded image and no running pull holds: among `candidates` when
   * given, else among all stored blobs.
   */
  async collectGarbage(candidates?: ReadonlySet<string>): Promise<string[]> {
    await this.records.refresh();
    const keep = new Set<string>();
    for (const r of this.records.all()) for (const b of r.blobs) keep.add(b);
    for (const lease of this.leases) for (const b of lease) keep.add(b);
    // A full sweep spares fresh blobs: a concurrent `podvisor image import` (another process) may not have recorded them yet (L9).
    if (!candidates) return this.store.sweep(keep, FULL_SWEEP_GRACE_MS);
    const removed: string[] = [];
    for (const d of candidates) {
      if (keep.has(d)) continue;
      await this.store.delete(d);
      removed.push(d);
    }
    return removed;
  }

  private async resolve(refOrId: string): Promise<ImageRecord | undefined> {
    await this.records.refresh();
    const text = refOrId.trim();
    const all = this.records.all();
    const byId = this.records.get(text) ?? this.records.get(`sha256:${text}`);
    if (byId) return byId;
    if (/^[a-f0-9]{6,64}$/.test(text)) {
      const matches = all.filter((r) => parseDigest(r.id).hex.startsWith(text));
      if (matches.length === 1) return matches[0];
    }
    if (isDigest(text)) return undefined;
    let ref: ImageReference;
    try {
      ref = parseReference(text);
    } catch {
      return undefined;
    }
    const digest = ref.digest;
    if (digest) {
      const wanted = digestedName(ref, digest);
      const repo = `${repositoryName(ref)}@`;
      return all.find((r) => r.repoDigests.includes(wanted)
        // the linux/amd64 manifest's own digest, for an image pulled through an index
        || (r.manifestDigest === digest && r.repoDigests.some((d) => d.startsWith(repo))));
    }
    const tag = taggedName(ref)!;
    return all.find((r) => r.repoTags.includes(tag));
  }

  private async info(r: ImageRecord): Promise<ImageInfo> {
    let imageConfig = this.configCache.get(r.id);
    if (!imageConfig) {
      imageConfig = JSON.parse((await this.store.read(r.id)).toString('utf8')) as ImageConfig;
      this.configCache.set(r.id, imageConfig);
    }
    const config = imageConfig.config ?? {};
    const user = (config.User ?? '').split(':')[0]!;
    return {
      id: r.id,
      repoTags: [...r.repoTags],
      repoDigests: [...r.repoDigests],
      size: r.size,
      config,
      imageConfig,
      ...(/^[0-9]+$/.test(user) ? { uid: Number(user) } : user !== '' ? { username: user } : {}),
      manifestDigest: r.manifestDigest,
      createdAt: r.createdAt,
    };
  }
}

/**
 * One error for a pull that failed on every endpoint: the answer of an endpoint that actually
 * answered (not found, refused, bad content) matters more than an unreachable one.
 */
function pullError(name: string, failures: { endpoint: string; error: unknown }[]): PodvisorError {
  const answered = failures.find((f) => isPodvisorError(f.error) && !['UNAVAILABLE', 'DEADLINE_EXCEEDED'].includes(f.error.code));
  const main = answered ?? failures[0]!;
  const others = failures.filter((f) => f !== main).map((f) => `${f.endpoint}: ${messageOf(f.error)}`);
  const code = isPodvisorError(main.error) ? main.error.code : 'UNAVAILABLE';
  const lead = code === 'NOT_FOUND' ? `image "${name}" not found` : `pulling image "${name}" failed`;
  const text = `${lead}: ${messageOf(main.error)}${others.length ? ` (also tried ${others.join('; ')})` : ''}`;
  return new PodvisorError(code, text, { cause: main.error });
}
