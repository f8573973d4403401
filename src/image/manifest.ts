import { failedPrecondition, notFound } from '../errors.js';

/** Media types podvisor understands (facts from the OCI image spec and Docker's schema 2). */
export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

export const MANIFEST_ACCEPT = [MediaType.ociIndex, MediaType.dockerManifestList, MediaType.ociManifest, MediaType.dockerManifest].join(', ');

/** Layer media types and how their bytes are encoded. */
const LAYER_TYPES: Record<string, 'gzip' | 'zstd' | 'none'> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar': 'none',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'gzip',
};

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

export const HOST_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly platform?: Platform;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly urls?: readonly string[];
}

export interface ImageManifest {
  readonly schemaVersion: 2;
  readonly mediaType: string;
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
}

export interface ImageIndex {
  readonly schemaVersion: 2;
  readonly mediaType: string;
  readonly manifests: readonly Descriptor[];
}

/** The OCI image config (the parts podvisor reads; the rest is kept as is). */
export interface ImageConfig {
  readonly architecture?: string;
  readonly os?: string;
  readonly variant?: string;
  readonly created?: string;
  readonly config?: {
    readonly User?: string;
    readonly Env?: readonly string[];
    readonly Entrypoint?: readonly string[] | null;
    readonly Cmd?: readonly string[] | null;
    readonly WorkingDir?: string;
    readonly ExposedPorts?: Readonly<Record<string, unknown>>;
    readonly Volumes?: Readonly<Record<string, unknown>>;
    readonly Labels?: Readonly<Record<string, string>>;
    readonly StopSignal?: string;
  };
  readonly rootfs: { readonly type: string; readonly diff_ids: readonly string[] };
  readonly history?: readonly unknown[];
}

export type ManifestDocument =
  | { readonly kind: 'manifest'; readonly manifest: ImageManifest }
  | { readonly kind: 'index'; readonly index: ImageIndex };

/**
 * Parses a manifest or index body. The media type comes from the document itself when it has
 * one, else from the HTTP Content-Type. `what` names the document in errors.
 */
export function parseManifestDocument(body: Uint8Array, contentType: string, what: string): ManifestDocument {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch {
    throw failedPrecondition(`${what} is not valid JSON`);
  }
  if (typeof doc !== 'object' || doc === null) throw failedPrecondition(`${what} is not a JSON object`);
  const declared = typeof doc.mediaType === 'string' ? doc.mediaType : contentType;
  if (doc.schemaVersion === 1 || declared === MediaType.dockerSchema1 || declared === MediaType.dockerSchema1Signed) {
    throw failedPrecondition(`${what} is a Docker schema 1 manifest, which podvisor does not support (push the image again with a current tool)`);
  }
  if (doc.schemaVersion !== 2) throw failedPrecondition(`${what} has schemaVersion ${String(doc.schemaVersion)}, expected 2`);

  const isIndex = Array.isArray(doc.manifests) && !('layers' in doc);
  if (isIndex) {
    const manifests = (doc.manifests as unknown[]).map((d, i) => descriptor(d, `${what} manifests[${i}]`));
    return { kind: 'index', index: { schemaVersion: 2, mediaType: declared || MediaType.ociIndex, manifests } };
  }
  if (!Array.isArray(doc.layers) || typeof doc.config !== 'object') throw failedPrecondition(`${what} has neither layers and config nor manifests`);
  const config = descriptor(doc.config, `${what} config`);
  const layers = (doc.layers as unknown[]).map((d, i) => descriptor(d, `${what} layers[${i}]`));
  for (const [i, layer] of layers.entries()) {
    if (!(layer.mediaType in LAYER_TYPES)) {
      throw failedPrecondition(`${what} layers[${i}] has media type "${layer.mediaType}", which podvisor cannot unpack (supported: tar, tar+gzip, tar+zstd)`);
    }
  }
  return { kind: 'manifest', manifest: { schemaVersion: 2, mediaType: declared || MediaType.ociManifest, config, layers } };
}

function descriptor(raw: unknown, what: string): Descriptor {
  const d = raw as Record<string, unknown>;
  if (typeof d !== 'object' || d === null) throw failedPrecondition(`${what} is not a descriptor object`);
  if (typeof d.digest !== 'string' || !/^sha(256|512):[a-f0-9]+$/.test(d.digest)) throw failedPrecondition(`${what} has no valid digest`);
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw failedPrecondition(`${what} has no valid size`);
  return {
    mediaType: typeof d.mediaType === 'string' ? d.mediaType : '',
    digest: d.digest,
    size: d.size,
    ...(typeof d.platform === 'object' && d.platform !== null ? { platform: d.platform as Platform } : {}),
    ...(typeof d.annotations === 'object' && d.annotations !== null ? { annotations: d.annotations as Record<string, string> } : {}),
    ...(Array.isArray(d.urls) ? { urls: d.urls as string[] } : {}),
  };
}

/**
 * The index entry for `want` (default linux/amd64). Entries without a platform are not images for
 * us (attestations, signatures); an amd64 variant (`v2`, `v3`) is accepted when no plain one exists.
 */
export function selectPlatform(index: ImageIndex, what: string, want: Platform = HOST_PLATFORM): Descriptor {
  const candidates = index.manifests.filter((m) => m.platform?.os === want.os && m.platform?.architecture === want.architecture);
  const exact = candidates.find((m) => (m.platform?.variant ?? '') === (want.variant ?? ''));
  const chosen = exact ?? candidates[0];
  if (!chosen) {
    const available = index.manifests.map((m) => (m.platform ? platformName(m.platform) : 'unknown')).join(', ') || 'none';
    throw notFound(`${what} has no image for ${platformName(want)} (it has: ${available})`);
  }
  return chosen;
}

export function platformName(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** How a layer's bytes are encoded, by its media type. */
export function layerEncoding(mediaType: string): 'gzip' | 'zstd' | 'none' | undefined {
  return LAYER_TYPES[mediaType];
}

/** Parses and checks an image config blob against its manifest. */
export function parseImageConfig(body: Uint8Array, manifest: ImageManifest, what: string): ImageConfig {
  let config: ImageConfig;
  try {
    config = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch {
    throw failedPrecondition(`${what}: the image config is not valid JSON`);
  }
  const diffIds = config?.rootfs?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.some((d) => typeof d !== 'string')) throw failedPrecondition(`${what}: the image config has no rootfs.diff_ids`);
  if (diffIds.length !== manifest.layers.length) {
    throw failedPrecondition(`${what}: the manifest lists ${manifest.layers.length} layers but the config names ${diffIds.length} diff ids`);
  }
  if ((config.os ?? 'linux') !== HOST_PLATFORM.os || (config.architecture ?? 'amd64') !== HOST_PLATFORM.architecture) {
    throw failedPrecondition(`${what} is a ${config.os}/${config.architecture} image; this node runs ${platformName(HOST_PLATFORM)}`);
  }
  return config;
}
