import type { ImageRpc } from './rpc.js';
import { toCriImage } from './image-mapping.js';

export const listImages: ImageRpc<'ListImages'> = async (svc, req) => {
  const filterRef = req.filter?.image?.image?.trim();
  const images = await svc.images.list(filterRef ? { image: filterRef } : undefined);
  return { images: images.map(toCriImage) };
};
