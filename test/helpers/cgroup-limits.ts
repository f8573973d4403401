import { existsSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * The memory and pids limits a process runs under, read back from its cgroups
 * (`/proc/<pid>/cgroup`): cgroup v1 per controller; on v2 the nearest cgroup up the tree
 * that sets a memory limit (libvirt keeps QEMU's threads in sub-cgroups of the domain's).
 */
export function cgroupLimits(procCgroup: string): { memoryBytes: number; memoryPeak: number; pidsMax: number; pidsNow: number } {
  const lines = procCgroup.trim().split('\n').map((l) => l.split(':'));
  const v1 = (ctl: string) => lines.find(([, c]) => c!.split(',').includes(ctl))?.[2];
  const mem = v1('memory');
  const pids = v1('pids');
  const read = (p: string) => readFileSync(p, 'utf8').trim();
  if (mem && pids) {
    return {
      memoryBytes: Number(read(`/sys/fs/cgroup/memory${mem}/memory.limit_in_bytes`)),
      memoryPeak: Number(read(`/sys/fs/cgroup/memory${mem}/memory.max_usage_in_bytes`)),
      pidsMax: Number(read(`/sys/fs/cgroup/pids${pids}/pids.max`)),
      pidsNow: Number(read(`/sys/fs/cgroup/pids${pids}/pids.current`)),
    };
  }
  let v2 = lines.find(([h]) => h === '0')![2]!;
  while (v2 !== '/' && read(`/sys/fs/cgroup${v2}/memory.max`) === 'max') v2 = dirname(v2);
  return {
    memoryBytes: Number(read(`/sys/fs/cgroup${v2}/memory.max`)),
    memoryPeak: Number(existsSync(`/sys/fs/cgroup${v2}/memory.peak`) ? read(`/sys/fs/cgroup${v2}/memory.peak`) : read(`/sys/fs/cgroup${v2}/memory.current`)),
    pidsMax: Number(read(`/sys/fs/cgroup${v2}/pids.max`)),
    pidsNow: Number(read(`/sys/fs/cgroup${v2}/pids.current`)),
  };
}
