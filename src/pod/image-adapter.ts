import type { OciImageConfig } from './image-config.js';
import type { PodImages } from './images.js';

/** The parts of src/image's ImageService the pod module uses. */
interface ImageStoreLike {
  get(refOrId: string): Promise<{
    id: string; repoTags: readonly string[]; repoDigests: readonly string[]; config: object; imageConfig?: { rootfs?: { diff_ids?: readonly string[] } };
  } | undefined>;
  ensureDisk(imageId: string): Promise<string>;
}

/** PodImages over the node's image store. */
export function podImages(store: ImageStoreLike): PodImages {
  return {
    async find(refOrId) {
      const info = await store.get(refOrId);
      if (!info) return undefined;
      return {
        id: info.id, repoTags: [...info.repoTags], repoDigests: [...info.repoDigests], config: info.config as OciImageConfig,
        layerCount: info.imageConfig?.rootfs?.diff_ids?.length ?? 0,
      };
    },
    ensureDisk: (imageId) => store.ensureDisk(imageId),
  };
}
