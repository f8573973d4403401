import type { ImageRpc } from './rpc.js';
import { registryAuthFrom, requiredImageRef } from './image-mapping.js';

export const pullImage: ImageRpc<'PullImage'> = async (svc, req) => {
  const ref = requiredImageRef(req.image, 'PullImage');
  const id = await svc.images.pull(ref, registryAuthFrom(req.auth));
  return { image_ref: id };
};
