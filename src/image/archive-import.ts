import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract } from 'tar-stream';
import { failedPrecondition, invalidArgument, isPodvisorError, messageOf, notFound } from '../errors.js';
import { logger } from '../log.js';
import { decodeLayer } from './decompress.js';
import { sha256Digest } from './digest.js';
import type { ImageService } from './image-service.js';
import {
  MediaType, parseImageConfig, parseManifestDocument, selectPlatform, type Descriptor, type ImageManifest,
} from './manifest.js';
import type { FetchedImage } from './puller.js';
import { parseReference, type ImageReference } from './reference.js';

const log = logger('image.import');

/** JSON members of an archive are read into memory; anything bigger is not metadata. */
const MAX_JSON_BYTES = 4 * 1024 * 1024;
const BLOB_PATH = /^blobs\/(sha256|sha512)\/([a-f0-9]+)$/;

export interface ImportedImage {
  readonly id: string;
  readonly names: readonly string[];
}

export interface ImportOptions {
  /** name for the image (for archives that carry none, or to override theirs); one image only */
  readonly name?: string;
}

/**
 * Loads an OCI-archive (oci-layout, index.json, blobs/) or docker-archive (`docker save`:
 * manifest.json, config JSON, layer tars) tarball, plain or gzip/zstd-compressed, into the image
 * store: one pass over the file, every blob verified, each image converted to its erofs disk.
 * For nodes without a registry.
 */
export async function importArchive(svc: ImageService, file: string, opts: ImportOptions = {}): Promise<ImportedImage[]> {
  const override = opts.name !== undefined ? parseReference(opts.name) : undefined;
  return svc.withLease(async (lease) => {
    const members = await readArchive(svc, file, lease);
    const images = members.json.has('index.json')
      ? ociImages(members, file)
      : members.json.has('manifest.json')
        ? await dockerImages(svc, members, file, lease)
        : undefined;
    if (!images) throw invalidArgument(`${file} is neither an OCI archive (no index.json) nor a docker archive (no manifest.json)`);
    if (images.length === 0) throw invalidArgument(`${file} holds no images`);
    if (override && images.length > 1) throw invalidArgument(`${file} holds ${images.length} images; --name can only name one`);

    const out: ImportedImage[] = [];
    for (const { manifestDigest, names } of images) {
      const fetched = await loadImage(svc, manifestDigest, file, lease);
      const refs = override ? [override] : names.flatMap((n) => tryReference(n));
      let id = '';
      if (refs.length === 0) id = await svc.commit(fetched);
      for (const ref of refs) id = await svc.commit(fetched, ref);
      out.push({ id, names: refs.map((r) => `${r.domain}/${r.path}${r.tag ? `:${r.tag}` : ''}`) });
      log.info({ file, id, names: out[out.length - 1]!.names }, 'image imported');
    }
    return out;
  });
}

interface ArchiveMembers {
  /** small JSON members by path */
  readonly json: Map<string, Buffer>;
  /** other members stored as blobs, by path (docker-archive layer tars) */
  readonly stored: Map<string, string>;
}

/** One pass over the archive: OCI blobs are verified against their names, other payloads hashed. */
async function readArchive(svc: ImageService, file: string, lease: Set<string>): Promise<ArchiveMembers> {
  const json = new Map<string, Buffer>();
  const stored = new Map<string, string>();
  const extractor = tarExtract();
  const source = createReadStream(file);
  const opening = new Promise<void>((resolve, reject) => { source.once('open', () => resolve()); source.once('error', reject); });
  try {
    await opening;
  } catch (e) {
    throw notFound(`cannot read ${file}: ${messageOf(e)}`, e);
  }
  const feeding = pipeline(Readable.from(decodeLayer(source, file)), extractor);
  feeding.catch(() => {});
  try {
    for await (const entry of extractor) {
      const h = entry.header;
      const path = h.name.replace(/^(\.\/)+/, '');
      if (h.type !== 'file' && h.type !== 'contiguous-file') { entry.resume(); continue; }
      const blob = BLOB_PATH.exec(path);
      if (blob) {
        const digest = `${blob[1]}:${blob[2]}`;
        lease.add(digest);
        if (await svc.store.has(digest)) entry.resume();
        else await svc.store.ingest(digest, entry as AsyncIterable<Buffer>, `${file}: ${path}`, h.size);
      } else if (path.endsWith('.json') || path === 'oci-layout' || path === 'repositories') {
        if ((h.size ?? 0) > MAX_JSON_BYTES) throw invalidArgument(`${file}: ${path} is larger than ${MAX_JSON_BYTES} bytes`);
        const chunks: Buffer[] = [];
        for await (const c of entry as AsyncIterable<Buffer>) chunks.push(c);
        json.set(path, Buffer.concat(chunks));
      } else if (path.endsWith('.tar') || path.endsWith('.tar.gz') || /^[a-f0-9]{64}$/.test(path.split('/').pop()!)) {
        const digest = await svc.store.ingestUnknown(entry as AsyncIterable<Buffer>, `${file}: ${path}`);
        lease.add(digest);
        stored.set(path, digest);
      } else {
        entry.resume();
      }
    }
    await feeding;
  } catch (e) {
    extractor.destroy();
    source.destroy();
    if (isPodvisorError(e)) throw e;
    throw invalidArgument(`${file} is not a readable tar archive: ${messageOf(e)}`, e);
  }
  return { json, stored };
}

function parseJson<T>(members: ArchiveMembers, path: string, file: string): T {
  try {
    return JSON.parse(members.json.get(path)!.toString('utf8')) as T;
  } catch {
    throw invalidArgument(`${file}: ${path} is not valid JSON`);
  }
}

/** Images of an OCI archive: index.json entries, with their names from the annotations. */
function ociImages(members: ArchiveMembers, file: string): { manifestDigest: string; names: string[] }[] {
  const index = parseJson<{ manifests?: Descriptor[] }>(members, 'index.json', file);
  return (index.manifests ?? []).map((d) => {
    const a = d.annotations ?? {};
    // ref.name is often only a tag ("latest"): it names the image only when it is a whole reference
    const name = a['io.containerd.image.name'] ?? a['org.opencontainers.image.ref.name'];
    return { manifestDigest: d.digest, names: name && /[/:]/.test(name) ? [name] : [] };
  });
}

/** Images of a docker archive: manifest.json entries, turned into Docker schema 2 manifests. */
async function dockerImages(svc: ImageService, members: ArchiveMembers, file: string, lease: Set<string>): Promise<{ manifestDigest: string; names: string[] }[]> {
  const entries = parseJson<{ Config?: string; RepoTags?: string[] | null; Layers?: string[] }[]>(members, 'manifest.json', file);
  if (!Array.isArray(entries)) throw invalidArgument(`${file}: manifest.json is not a list`);
  const out: { manifestDigest: string; names: string[] }[] = [];
  for (const [i, e] of entries.entries()) {
    const config = e.Config ? members.json.get(e.Config.replace(/^(\.\/)+/, '')) : undefined;
    if (!config) throw invalidArgument(`${file}: manifest.json entry ${i} names config "${e.Config}", which the archive does not hold`);
    const configDigest = sha256Digest(config);
    await svc.store.put(configDigest, config, `${file}: ${e.Config}`);
    lease.add(configDigest);
    const layers: Descriptor[] = [];
    for (const p of e.Layers ?? []) {
      const digest = members.stored.get(p.replace(/^(\.\/)+/, ''));
      if (!digest) throw invalidArgument(`${file}: manifest.json entry ${i} names layer "${p}", which the archive does not hold`);
      layers.push({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar', digest, size: await svc.store.size(digest) });
    }
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.dockerManifest,
      config: { mediaType: MediaType.dockerConfig, digest: configDigest, size: config.length },
      layers,
    }));
    const manifestDigest = sha256Digest(manifest);
    await svc.store.put(manifestDigest, manifest, `${file}: manifest ${i}`);
    lease.add(manifestDigest);
    out.push({ manifestDigest, names: e.RepoTags ?? [] });
  }
  return out;
}

/** The image a stored manifest (or index) describes, checked like a pulled one. */
async function loadImage(svc: ImageService, topDigest: string, file: string, lease: Set<string>): Promise<FetchedImage> {
  const read = async (digest: string, what: string) => {
    if (!(await svc.store.has(digest))) throw failedPrecondition(`${file}: ${what} ${digest} is not in the archive`);
    return svc.store.read(digest);
  };
  const topBody = await read(topDigest, 'manifest');
  let doc = parseManifestDocument(topBody, '', `${file}: manifest ${topDigest}`);
  let manifestDigest = topDigest;
  let manifestSize = topBody.length;
  if (doc.kind === 'index') {
    const chosen = selectPlatform(doc.index, `${file}: index ${topDigest}`);
    const body = await read(chosen.digest, 'linux/amd64 manifest');
    doc = parseManifestDocument(body, chosen.mediaType, `${file}: manifest ${chosen.digest}`);
    if (doc.kind !== 'manifest') throw failedPrecondition(`${file}: nested indexes are not supported`);
    manifestDigest = chosen.digest;
    manifestSize = body.length;
  }
  const manifest: ImageManifest = doc.manifest;
  const config = parseImageConfig(await read(manifest.config.digest, 'image config'), manifest, `${file}: image ${manifestDigest}`);
  // Present is enough: reading a layer whole to check it would fail at 2 GiB (L10).
  for (const l of manifest.layers) {
    if (!(await svc.store.has(l.digest))) throw failedPrecondition(`${file}: layer ${l.digest} is not in the archive`);
  }
  const blobs = [...new Set([topDigest, manifestDigest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)])];
  for (const b of blobs) lease.add(b);
  return { topDigest, manifestDigest, manifest, manifestSize, configDigest: manifest.config.digest, config, blobs };
}

function tryReference(name: string): ImageReference[] {
  try {
    return [parseReference(name)];
  } catch {
    log.warn({ name }, 'archive names its image with something that is not a reference; importing it without that name');
    return [];
  }
}
