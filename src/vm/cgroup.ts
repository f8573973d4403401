import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { failedPrecondition, messageOf } from '../errors.js';

/**
 * Per-VM resource limits on the QEMU process: a cgroup per sandbox with a memory limit of
 * guest RAM plus QEMU's own overhead and a pids limit, so a misbehaving VMM cannot take the
 * node's memory or fork it to death. cgroup v2 where the host has it (memory.max, pids.max);
 * on a v1 or hybrid host (this project's CI machine) the v1 memory and pids hierarchies
 * (memory.limit_in_bytes, pids.max). The directories are recorded in vm.json so that the
 * daemon that sees the VM exit, even a restarted one, removes them.
 */

const CGROUP_ROOT = '/sys/fs/cgroup';
const CGROUP2_SUPER_MAGIC = 0x63677270;

export interface VmLimits {
  memoryBytes: number;
  pidsMax: number;
}

export type CgroupLayout = { kind: 'v2'; root: string } | { kind: 'v1'; memory: string; pids: string };

let layout: CgroupLayout | null | undefined;

/** Which cgroup interface this host offers for memory and pids, or null if none is writable. */
export function hostCgroupLayout(): CgroupLayout | null {
  if (layout !== undefined) return layout;
  layout = null;
  try {
    if (statfsSync(CGROUP_ROOT).type === CGROUP2_SUPER_MAGIC) {
      layout = { kind: 'v2', root: CGROUP_ROOT };
    } else {
      const memory = join(CGROUP_ROOT, 'memory');
      const pids = join(CGROUP_ROOT, 'pids');
      if (existsSync(join(memory, 'cgroup.procs')) && existsSync(join(pids, 'cgroup.procs'))) layout = { kind: 'v1', memory, pids };
    }
  } catch {
    layout = null;
  }
  return layout;
}

/** The host's cgroup layout for per-VM limits; fails closed when there is none. */
export function requireCgroupLayout(): CgroupLayout {
  const l = hostCgroupLayout();
  if (!l) {
    throw failedPrecondition('this host has no writable memory and pids cgroups for per-VM limits; set [vm] cgroup_parent = "" to run VMs without them');
  }
  return l;
}

/**
 * Makes the VM's cgroup(s) under `parent` with the limits and returns their directories.
 * Refuses (fail closed) when the host has no usable memory and pids cgroups.
 */
export function createVmCgroup(parent: string, id: string, limits: VmLimits): string[] {
  const l = requireCgroupLayout();
  const made: string[] = [];
  try {
    if (l.kind === 'v2') {
      // Controllers must be enabled on every level above the VM's cgroup.
      let dir = l.root;
      for (const part of parent.split('/')) {
        writeFileSync(join(dir, 'cgroup.subtree_control'), '+memory +pids');
        dir = join(dir, part);
        mkdirSync(dir, { recursive: true });
      }
      writeFileSync(join(dir, 'cgroup.subtree_control'), '+memory +pids');
      const vm = join(dir, id);
      mkdirSync(vm);
      made.push(vm);
      writeFileSync(join(vm, 'memory.max'), String(limits.memoryBytes));
      writeFileSync(join(vm, 'pids.max'), String(limits.pidsMax));
    } else {
      const mem = join(l.memory, parent, id);
      mkdirSync(mem, { recursive: true });
      made.push(mem);
      writeFileSync(join(mem, 'memory.limit_in_bytes'), String(limits.memoryBytes));
      const pids = join(l.pids, parent, id);
      mkdirSync(pids, { recursive: true });
      made.push(pids);
      writeFileSync(join(pids, 'pids.max'), String(limits.pidsMax));
    }
  } catch (e) {
    removeVmCgroup(made);
    throw failedPrecondition(`cannot set up the VM's cgroup under ${parent}: ${messageOf(e)}`, e);
  }
  return made;
}

/** Moves a process into the VM's cgroup(s). */
export function enterCgroup(dirs: string[], pid: number): void {
  for (const d of dirs) writeFileSync(join(d, 'cgroup.procs'), String(pid));
}

/** Removes the VM's cgroups; the process must be gone. Missing ones are fine. */
export function removeVmCgroup(dirs: string[]): string[] {
  const left: string[] = [];
  for (const d of dirs) {
    try {
      rmdirSync(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') left.push(d);
    }
  }
  return left;
}

/**
 * Removes the cgroups now, and retries for a while those still busy: a QEMU that was not
 * podvisord's child (reattached) stays a zombie, still in its cgroup, until init reaps it.
 */
export function removeVmCgroupSoon(dirs: string[], delaysMs = [250, 1000, 3000, 10_000, 30_000]): void {
  let left = removeVmCgroup(dirs);
  for (const delay of delaysMs) {
    if (left.length === 0) return;
    const pending = left;
    setTimeout(() => {
      left = removeVmCgroup(pending);
    }, delay).unref();
  }
}

/**
 * At daemon start: removes VM cgroups under `parent` that hold no process and are older than
 * `minAgeMs` (their QEMU died while no daemon watched, or a daemon was killed). The age keeps
 * it away from a cgroup another daemon on this host has just made for a launch.
 */
export function sweepIdleVmCgroups(parent: string, minAgeMs = 60_000): string[] {
  const l = hostCgroupLayout();
  if (!l || !parent) return [];
  const roots = l.kind === 'v2' ? [join(l.root, parent)] : [join(l.memory, parent), join(l.pids, parent)];
  const removed: string[] = [];
  for (const root of roots) {
    let entries: string[];
    try {
      entries = readdirSync(root, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      continue;
    }
    for (const name of entries) {
      const dir = join(root, name);
      try {
        if (Date.now() - statSync(dir).mtimeMs < minAgeMs) continue;
        if (readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim() !== '') continue;
        rmdirSync(dir);
        removed.push(dir);
      } catch {
        /* busy or gone */
      }
    }
  }
  return removed;
}
