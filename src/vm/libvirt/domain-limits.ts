import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { failedPrecondition, messageOf } from '../../errors.js';
import { removeVmCgroup, requireCgroupLayout, type VmLimits } from '../cgroup.js';

/**
 * The memory and pids limits of a QEMU libvirt started: the QEMU backend's figures (guest
 * RAM + `qemu_overhead_mib` as the memory limit, `qemu_pids_max`), written by podvisord into
 * the cgroups libvirt placed the QEMU in; where libvirt has none for a controller (it does
 * not manage pids; on a cgroup v1 host its QEMU stays in the pids root), into a per-VM cgroup
 * of podvisor's own under `cgroup_parent` in that hierarchy, which only podvisor uses.
 *
 * Why not libvirt's `<memtune><hard_limit>`: libvirt then sets QEMU's RLIMIT_MEMLOCK to the
 * hard limit before exec, and raising it above the inherited hard limit needs
 * CAP_SYS_RESOURCE. Measured on this project's host (root without CAP_SYS_RESOURCE, memlock
 * 8 MiB): the domain does not start ("cannot limit locked memory of process N to 805306368:
 * Operation not permitted"). libvirt has no pids limit at all.
 *
 * When: right after libvirt started the domain. Until the agent answers, the guest runs
 * podvisor's own kernel and init; no tenant code runs before the limits are in place.
 * Moving QEMU into another v2 cgroup would take it out of libvirt's tree (its vCPU and
 * emulator placement), so on v2 the limits go on libvirt's domain cgroup itself.
 */

/** Applies the limits to QEMU `pid`; returns the cgroup directories podvisor made (removed when the VM ends). */
export function limitDomainQemu(pid: number, opts: { parent: string; id: string; limits: VmLimits }): string[] {
  const layout = requireCgroupLayout();
  const placed = procCgroups(pid);
  const made: string[] = [];
  try {
    if (layout.kind === 'v1') {
      const want: Array<[string, string, string, number]> = [
        ['memory', layout.memory, 'memory.limit_in_bytes', opts.limits.memoryBytes],
        ['pids', layout.pids, 'pids.max', opts.limits.pidsMax],
      ];
      for (const [controller, root, file, value] of want) {
        const at = placed.get(controller);
        if (at && at !== '/') {
          writeFileSync(join(root, at, file), String(value));
          continue;
        }
        const own = join(root, opts.parent, opts.id);
        mkdirSync(own, { recursive: true });
        made.push(own);
        writeFileSync(join(own, file), String(value));
        writeFileSync(join(own, 'cgroup.procs'), String(pid));
      }
    } else {
      const at = placed.get('');
      if (!at || at === '/') throw new Error(`libvirt placed QEMU pid ${pid} in no cgroup of its own`);
      // libvirt puts QEMU's threads in sub-cgroups (emulator, vcpuN) of the domain's cgroup.
      const domain = join(layout.root, /\/(emulator|vcpu\d+)$/.test(at) ? dirname(at) : at);
      for (const dir of ancestors(layout.root, domain)) writeFileSync(join(dir, 'cgroup.subtree_control'), '+memory +pids');
      writeFileSync(join(domain, 'memory.max'), String(opts.limits.memoryBytes));
      writeFileSync(join(domain, 'pids.max'), String(opts.limits.pidsMax));
    }
  } catch (e) {
    removeVmCgroup(made);
    throw failedPrecondition(`cannot set the memory and pids limits of QEMU pid ${pid}: ${messageOf(e)}`, e);
  }
  return made;
}

/** /proc/<pid>/cgroup as controller → path; the v2 line's key is ''. */
function procCgroups(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n')) {
    const [, controllers, path] = /^\d+:([^:]*):(.*)$/.exec(line) ?? [];
    if (controllers === undefined || path === undefined) continue;
    for (const c of controllers.split(',')) out.set(c, path);
  }
  return out;
}

/** The directories from `root` down to the parent of `dir`. */
function ancestors(root: string, dir: string): string[] {
  const out: string[] = [];
  for (let d = dirname(dir); d.startsWith(root); d = dirname(d)) {
    out.unshift(d);
    if (d === root) break;
  }
  return out;
}
