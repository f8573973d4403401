import { invalidArgument } from '../errors.js';
import type { IdMapping, UserNamespaceMappings } from './records.js';

/**
 * hostUsers: false pods. kubelet hands each such pod its own uid/gid range
 * (UserNamespace mode POD with the mappings); crun in the guest creates the
 * container's user namespace with exactly those mappings, so uid 0 in the
 * container is an unprivileged uid of the guest kernel. The ranges are applied
 * inside the VM, where they mean the guest's ids (the host kernel never sees
 * the container's processes).
 */

/** The kernel accepts at most 340 lines in uid_map/gid_map. */
const MAX_MAPPINGS = 340;
const ID_LIMIT = 2 ** 32;

export function checkUserNamespace(m: UserNamespaceMappings, what: string): void {
  for (const [kind, list] of [['uid', m.uids], ['gid', m.gids]] as const) {
    if (list.length === 0) throw invalidArgument(`${what}: a user namespace needs ${kind} mappings`);
    if (list.length > MAX_MAPPINGS) throw invalidArgument(`${what}: ${list.length} ${kind} mappings, more than the kernel's ${MAX_MAPPINGS}`);
    const sorted = [...list].sort((a, b) => a.containerId - b.containerId);
    sorted.forEach((e, i) => {
      if (e.length < 1 || e.containerId + e.length > ID_LIMIT || e.hostId + e.length > ID_LIMIT) {
        throw invalidArgument(`${what}: ${kind} mapping ${JSON.stringify(e)} is empty or goes past 2^32`);
      }
      const prev = sorted[i - 1];
      if (prev && prev.containerId + prev.length > e.containerId) throw invalidArgument(`${what}: ${kind} mappings overlap`);
    });
  }
}

/** The OCI linux.uidMappings / gidMappings. */
export function ociIdMappings(list: IdMapping[]): Array<{ containerID: number; hostID: number; size: number }> {
  return list.map((m) => ({ containerID: m.containerId, hostID: m.hostId, size: m.length }));
}
