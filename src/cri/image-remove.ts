import type { ImageRpc } from './rpc.js';
import { requiredImageRef } from './image-mapping.js';

/** Removing an image that is not there succeeds (the CRI makes RemoveImage idempotent). */
export const removeImage: ImageRpc<'RemoveImage'> = async (svc, req) => {
  await svc.images.remove(requiredImageRef(req.image, 'RemoveImage'));
  return {};
};
