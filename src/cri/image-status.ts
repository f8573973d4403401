import { chainId } from '../image/digest.js';
import type { ImageRpc } from './rpc.js';
import { requiredImageRef, toCriImage } from './image-mapping.js';

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
