import { invalidArgument } from '../errors.js';
import type { RegistryAuth } from '../image/auth.js';
import type { ImageInfo } from '../image/image-service.js';
import type { AuthConfig__Output } from './generated/runtime/v1/AuthConfig.js';
import type { Image } from './generated/runtime/v1/Image.js';
import type { ImageSpec__Output } from './generated/runtime/v1/ImageSpec.js';

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
