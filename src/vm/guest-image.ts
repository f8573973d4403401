import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { failedPrecondition } from '../errors.js';

/** The guest image hack/build-guest-image produces (see docs/ARCHITECTURE.md). */
export interface GuestImage {
  dir: string;
  /** Raw kernel ELF, booted through PVH. */
  kernel: string;
  initrd: string;
  systemDisk: string;
  manifest: GuestImageManifest;
}

export interface GuestImageManifest {
  hash: string;
  kernelVersion: string;
  kernelPackage?: string;
  nodeVersion?: string;
  crunVersion?: string;
  files: Record<string, { path: string; size: number }>;
}

/** `$PODVISOR_GUEST_DIR`, else `out/guest` in the repository. */
export function defaultGuestImageDir(): string {
  return process.env.PODVISOR_GUEST_DIR ?? resolve(fileURLToPath(new URL('../../out/guest', import.meta.url)));
}

/** Paths of a built guest image; a clear error says how to build one if it is missing. */
export function locateGuestImage(dir: string = defaultGuestImageDir()): GuestImage {
  const manifestPath = join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) {
    throw failedPrecondition(`no guest image in ${dir} (missing manifest.json): run hack/build-guest-image (or set PODVISOR_GUEST_DIR)`);
  }
  let manifest: GuestImageManifest;
  try {
    manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as GuestImageManifest;
  } catch (err) {
    throw failedPrecondition(`guest image manifest ${manifestPath} is unreadable (${(err as Error).message}): rebuild with hack/build-guest-image`);
  }
  const image: GuestImage = {
    dir,
    kernel: join(dir, manifest.files?.vmlinux?.path ?? 'vmlinux'),
    initrd: join(dir, manifest.files?.initrd?.path ?? 'initrd.img'),
    systemDisk: join(dir, manifest.files?.systemDisk?.path ?? 'system.erofs'),
    manifest,
  };
  for (const path of [image.kernel, image.initrd, image.systemDisk]) {
    if (!existsSync(path)) throw failedPrecondition(`guest image in ${dir} is incomplete (${path} is missing): run hack/build-guest-image`);
  }
  return image;
}
