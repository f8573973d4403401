import { failedPrecondition, isPodvisorError, messageOf, resourceExhausted } from '../errors.js';
import { logger } from '../log.js';
import type { ContentStore } from './content-store.js';
import {
  parseImageConfig, parseManifestDocument, selectPlatform, type Descriptor, type ImageConfig, type ImageManifest,
} from './manifest.js';
import { formatReference, type ImageReference } from './reference.js';
import type { RegistryClient } from './registry-client.js';
import type { SingleFlight } from './single-flight.js';

const log = logger('image.pull');

/** An image whose blobs are all in the content store, ready to be converted and recorded. */
export interface FetchedImage {
  /** digest the reference resolved to (an index or a manifest); undefined for archives without one */
  readonly topDigest?: string;
  readonly manifestDigest: string;
  readonly manifest: ImageManifest;
  /** bytes of the platform manifest */
  readonly manifestSize: number;
  readonly configDigest: string;
  readonly config: ImageConfig;
  /** all blobs the image needs kept */
  readonly blobs: readonly string[];
}

export interface PullContext {
  readonly store: ContentStore;
  /** one download per blob digest, shared by concurrent pulls */
  readonly blobFlights: SingleFlight<void>;
  /** digests this pull holds against garbage collection until it is recorded */
  readonly lease: Set<string>;
  readonly layerConcurrency: number;
  /** Largest total of layer sizes one image may declare (M3): the unpack limit. */
  readonly maxImageBytes: number;
  /** Serve digest pulls from the store without asking the registry (M6; off by default). */
  readonly trustCachedDigests?: boolean;
}

/** Largest image config accepted (M3), as containerd-like tools cap it; it is read whole and parsed. */
export const MAX_CONFIG_BYTES = 8 << 20;

/**
 * Fetches an image from one registry endpoint into the content store: resolves the tag (HEAD, so
 * nothing is transferred when the manifest is already here), picks linux/amd64 from an index,
 * then the config and layers that are not stored yet. Everything is verified against its digest.
 */
export async function fetchImage(ctx: PullContext, client: RegistryClient, ref: ImageReference): Promise<FetchedImage> {
  const name = formatReference(ref);
  const reference = ref.digest ?? ref.tag!;
  let topDigest: string | undefined;
  let fromStoreOk = true;
  if (ref.digest) {
    topDigest = ref.digest;
    if (!ctx.trustCachedDigests) {
      // As containerd's resolver does: ask the registry with this pull's credentials even when
      // the manifest is stored, so a private image is not served to a pull without them (M6).
      const answered = await client.resolveDigest(ref.digest);
      // A registry that does not answer HEAD is asked with a GET instead.
      if (answered === undefined) fromStoreOk = false;
    }
  } else {
    topDigest = await client.resolveDigest(reference);
  }
  // once the tag is resolved, fetch by digest: a tag that moves meanwhile cannot mix two images
  const top = await manifestBlob(ctx, client, topDigest ?? reference, topDigest, `manifest of ${name}`, fromStoreOk);
  topDigest = top.digest;

  let doc = parseManifestDocument(top.body, top.mediaType, `manifest of ${name}`);
  let manifestDigest = top.digest;
  let manifestSize = top.body.length;
  if (doc.kind === 'index') {
    const chosen: Descriptor = selectPlatform(doc.index, `image index of ${name}`);
    const child = await manifestBlob(ctx, client, chosen.digest, chosen.digest, `linux/amd64 manifest of ${name}`);
    if (child.body.length !== chosen.size) {
      throw failedPrecondition(`linux/amd64 manifest of ${name} is ${child.body.length} bytes, the index says ${chosen.size}`);
    }
    doc = parseManifestDocument(child.body, child.mediaType, `linux/amd64 manifest of ${name}`);
    if (doc.kind !== 'manifest') throw failedPrecondition(`image index of ${name} points at another index for linux/amd64; nested indexes are not supported`);
    manifestDigest = child.digest;
    manifestSize = child.body.length;
  }
  const manifest = doc.manifest;
  checkDeclaredSizes(ctx, manifest, name);

  await blob(ctx, client, manifest.config, `image config of ${name}`);
  const config = parseImageConfig(await ctx.store.read(manifest.config.digest), manifest, name);

  const queue = manifest.layers.map((layer, i) => ({ layer, what: `layer ${i + 1}/${manifest.layers.length} of ${name}` }));
  const workers = Array.from({ length: Math.min(ctx.layerConcurrency, queue.length) }, async () => {
    for (let job = queue.shift(); job; job = queue.shift()) await blob(ctx, client, job.layer, job.what);
  });
  await Promise.all(workers);

  return {
    topDigest,
    manifestDigest,
    manifest,
    manifestSize,
    configDigest: manifest.config.digest,
    config,
    blobs: [...new Set([topDigest, manifestDigest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)])],
  };
}

/**
 * Refuses, before any download, an image whose config or layers declare sizes
 * past the limits (M3): the config is read whole and parsed, layers fill the
 * ingest directory until their declared size.
 */
function checkDeclaredSizes(ctx: PullContext, manifest: ImageManifest, name: string): void {
  if (manifest.config.size > MAX_CONFIG_BYTES) {
    throw failedPrecondition(`image config of ${name} declares ${manifest.config.size} bytes, over the ${MAX_CONFIG_BYTES}-byte limit for image configs`);
  }
  const total = manifest.layers.reduce((sum, l) => sum + l.size, 0);
  if (total > ctx.maxImageBytes) {
    throw resourceExhausted(`the layers of ${name} declare ${total} bytes, over this node's limit of ${ctx.maxImageBytes} bytes per image (image.maxUnpackedBytes)`);
  }
}

/** A manifest from the store when its digest is known and present, else from the registry (then stored). */
async function manifestBlob(ctx: PullContext, client: RegistryClient, reference: string, digest: string | undefined, what: string, fromStoreOk = true) {
  if (digest !== undefined) {
    ctx.lease.add(digest);
    if (fromStoreOk && (await ctx.store.has(digest))) return { digest, body: await ctx.store.read(digest), mediaType: '' };
  }
  const fetched = await client.getManifest(reference, digest);
  ctx.lease.add(fetched.digest);
  await ctx.store.put(fetched.digest, fetched.body, what);
  return fetched;
}

/**
 * Makes sure a blob is in the store, downloading it once however many pulls want it. A download
 * cut off midway (connection reset, silence) starts again, up to BLOB_ATTEMPTS times; content that
 * arrives whole but wrong is not retried.
 */
async function blob(ctx: PullContext, client: RegistryClient, d: Descriptor, what: string): Promise<void> {
  ctx.lease.add(d.digest);
  if (await ctx.store.has(d.digest)) return;
  await ctx.blobFlights.run(d.digest, async () => {
    if (await ctx.store.has(d.digest)) return;
    for (let attempt = 1; ; attempt++) {
      try {
        await ctx.store.ingest(d.digest, await client.openBlob(d.digest), what, d.size);
        return;
      } catch (e) {
        if (attempt >= BLOB_ATTEMPTS || !interruptedTransfer(e)) throw e;
        log.warn({ blob: d.digest, attempt, err: messageOf(e) }, 'blob download interrupted; starting it again');
      }
    }
  });
}

const BLOB_ATTEMPTS = 3;

/** A body that broke off: a socket error or timeout while streaming, or the stream ending short. */
function interruptedTransfer(e: unknown): boolean {
  if (isPodvisorError(e)) {
    return e.code === 'DEADLINE_EXCEEDED' || (e.code === 'FAILED_PRECONDITION' && /is \d+ bytes, its descriptor declares/.test(e.message));
  }
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (e as Error).message === 'aborted';
}
