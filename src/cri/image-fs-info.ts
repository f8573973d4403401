import type { ImageRpc } from './rpc.js';

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
