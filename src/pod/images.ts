import type { OciImageConfig } from './image-config.js';

/** What the pod services need from the image store (src/image/), seen from a pod. */
export interface PodImages {
  /** The image for a reference or id, or undefined when it is not present on this node. */
  find(refOrId: string): Promise<PodImage | undefined>;
  /** Path of the image's read-only erofs disk (made once, cached). */
  ensureDisk(imageId: string): Promise<string>;
}

export interface PodImage {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  config: OciImageConfig;
  /** How many filesystem layers it has (rootfs.diff_ids); an image volume needs at least one. */
  layerCount?: number;
}
