import { existsSync } from 'node:fs';
import { isAbsolute, normalize } from 'node:path';
import { invalidArgument, notFound, unimplemented } from '../errors.js';
import type { ContainerConfig, Mount } from './records.js';

/**
 * CRI mounts of one container: what is refused (and why), and the OCI bind
 * mounts the guest gets. Host sources arrive through the sandbox share
 * (src/volume/), image volumes from the image's own disk in the guest.
 */

/** One OCI runtime-spec mount (the shape of `OciSpec.mounts` entries). */
export interface OciMount { destination: string; type: string; source: string; options: string[] }

/** Where the OCI spec finds a volume in the guest, once it is there. */
export interface PreparedVolume {
  mount: Mount;
  guestSource: string;
}

/** containerd leaves relabelling to SELinux; with SELinux on the host it would matter, and podvisor cannot do it. */
function hostHasSelinux(): boolean {
  return existsSync('/sys/fs/selinux/enforce');
}

function describe(m: Mount): string {
  return m.image ? `image volume ${m.image} -> ${m.containerPath}` : `mount ${m.hostPath} -> ${m.containerPath}`;
}

/** Refuses, before anything is made, every mount podvisor cannot honour as asked. */
export function validateMounts(config: ContainerConfig): void {
  const who = `container "${config.metadata.name}"`;
  const seen = new Set<string>();
  for (const m of config.mounts) {
    const what = `${who}: ${describe(m)}`;
    if (!isAbsolute(m.containerPath) || m.containerPath.includes('\0')) {
      throw invalidArgument(`${what}: container_path must be an absolute path`);
    }
    const dest = normalize(m.containerPath).replace(/\/+$/, '') || '/';
    if (dest === '/') throw invalidArgument(`${what}: cannot mount over the container's root`);
    if (seen.has(dest)) throw invalidArgument(`${what}: another mount already uses ${dest}`);
    seen.add(dest);
    if (m.propagation === 'BIDIRECTIONAL') {
      throw invalidArgument(`${what}: bidirectional mount propagation cannot cross the pod VM boundary (mounts made in the guest ` +
        'live in the guest kernel and can never appear on the host); use private or host-to-container propagation');
    }
    if (m.idMapped) throw unimplemented(`${what}: id-mapped mounts (uid/gid mappings) are not supported by podvisor`);
    if (m.selinuxRelabel && hostHasSelinux()) {
      throw unimplemented(`${what}: SELinux relabelling is not supported by podvisor, and this host has SELinux enabled`);
    }
    if (m.recursiveReadOnly && !m.readonly) throw invalidArgument(`${what}: recursive_read_only needs readonly`);
    if (m.image) {
      if (m.hostPath) throw invalidArgument(`${what}: a mount has either an image or a host_path, not both`);
      const sub = m.imageSubPath ?? '';
      if (sub !== '' && (isAbsolute(sub) || sub.split('/').includes('..') || sub.includes('\0'))) {
        throw invalidArgument(`${what}: image_sub_path ${JSON.stringify(sub)} must be a relative path without ".."`);
      }
      continue;
    }
    if (!isAbsolute(m.hostPath) || m.hostPath.includes('\0')) throw invalidArgument(`${what}: host_path must be an absolute path`);
  }
  for (const d of config.devices) {
    throw unimplemented(`${who}: host device ${d.hostPath} cannot be passed into the pod VM: a device node names a host driver the ` +
      "guest kernel cannot reach, and podvisor has no safe passthrough model (no VFIO); remove the device");
  }
}

/** The OCI bind mount for one prepared volume: ro/rw, propagation and (for recursive_read_only) crun's `rro`. */
export function ociVolumeMount(v: PreparedVolume): OciMount {
  const m = v.mount;
  const readonly = m.readonly || !!m.image;
  const options = ['rbind', readonly ? 'ro' : 'rw', m.propagation === 'HOST_TO_CONTAINER' ? 'rslave' : 'rprivate', 'nosuid', 'nodev'];
  if (m.recursiveReadOnly) options.push('rro');
  return { destination: normalize(m.containerPath).replace(/\/+$/, ''), type: 'bind', source: v.guestSource, options };
}

/** Image volumes: a missing sub-path is an error kubelet shows, not an empty mount. */
export function missingSubPath(m: Mount): Error {
  return notFound(`image volume ${m.image} has no path ${JSON.stringify(m.imageSubPath)} (image_sub_path) for ${m.containerPath}`);
}
