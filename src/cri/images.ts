import { invalidArgument } from '../errors.js';
import type { RegistryAuth } from '../image/auth.js';
import { chainId } from '../image/digest.js';
import type { ImageInfo } from '../image/image-service.js';
import type { AuthConfig__Output } from './generated/runtime/v1/AuthConfig.js';
import type { Image } from './generated/runtime/v1/Image.js';
import type { ImageSpec__Output } from './generated/runtime/v1/ImageSpec.js';
import type { ImageRpc } from './rpc.js';
import { sendChunks } from './list-stream.js';

/**
 * The ImageService RPCs and their CRI <-> image-domain mapping. The logic is
 * in src/image/image-service.ts (`svc.images`).
 */

// ---- handlers ----

export const pullImage: ImageRpc<'PullImage'> = async (svc, req) => {
  const ref = requiredImageRef(req.image, 'PullImage');
  const id = await svc.images.pull(ref, registryAuthFrom(req.auth));
  return { image_ref: id };
};

/** A missing image is an empty answer, not an error (kubelet asks before every pull). */
export const imageStatus: ImageRpc<'ImageStatus'> = async (svc, req) => {
  const image = await svc.images.status(requiredImageRef(req.image, 'ImageStatus'));
  const info: Record<string, string> = {};
  if (!image) return { image: null, info };
  if (req.verbose) {
    info.info = JSON.stringify({
      chainID: chainId(image.imageConfig.rootfs.diff_ids),
      imageSpec: image.imageConfig,
      manifestDigest: image.manifestDigest,
      createdAt: image.createdAt,
      disk: svc.images.diskPath(image.id),
    });
  }
  return { image: toCriImage(image), info };
};

export const listImages: ImageRpc<'ListImages'> = async (svc, req) => {
  const filterRef = req.filter?.image?.image?.trim();
  const images = await svc.images.list(filterRef ? { image: filterRef } : undefined);
  return { images: images.map(toCriImage) };
};

export const streamImages: ImageRpc<'StreamImages'> = async (svc, req, call) => {
  const { images } = await listImages(svc, { filter: req.filter });
  await sendChunks(images ?? [], call, (chunk) => ({ images: chunk }));
};

/** Removing an image that is not there succeeds (the CRI makes RemoveImage idempotent). */
export const removeImage: ImageRpc<'RemoveImage'> = async (svc, req) => {
  await svc.images.remove(requiredImageRef(req.image, 'RemoveImage'));
  return {};
};

export const imageFsInfo: ImageRpc<'ImageFsInfo'> = async (svc) => {
  const usage = await svc.images.fsInfo();
  return {
    image_filesystems: [{
      timestamp: String(usage.timestamp),
      fs_id: { mountpoint: usage.mountpoint },
      used_bytes: { value: String(usage.usedBytes) },
      inodes_used: { value: String(usage.inodesUsed) },
    }],
    container_filesystems: [],
  };
};

// ---- request and response mapping ----

/** The image reference of a request's ImageSpec, or INVALID_ARGUMENT naming the RPC. */
export function requiredImageRef(spec: ImageSpec__Output | null | undefined, rpc: string): string {
  const ref = spec?.image?.trim() ?? '';
  if (ref === '') throw invalidArgument(`${rpc}: image.image is empty; name the image (e.g. registry.k8s.io/pause:3.9) or its id`);
  return ref;
}

/** CRI AuthConfig (snake_case, proto3 defaults) → the image service's credentials shape. */
export function registryAuthFrom(auth: AuthConfig__Output | null | undefined): RegistryAuth | undefined {
  if (!auth) return undefined;
  return {
    username: auth.username,
    password: auth.password,
    auth: auth.auth,
    serverAddress: auth.server_address,
    identityToken: auth.identity_token,
    registryToken: auth.registry_token,
  };
}

/** An ImageInfo as a CRI Image: uid for a numeric image user, username for a named one. */
export function toCriImage(info: ImageInfo): Image {
  return {
    id: info.id,
    repo_tags: [...info.repoTags],
    repo_digests: [...info.repoDigests],
    size: String(info.size),
    uid: info.uid !== undefined ? { value: String(info.uid) } : null,
    username: info.username ?? '',
    spec: { image: info.id, annotations: {} },
    pinned: false,
  };
}
