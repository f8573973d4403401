import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { locateGuestImage } from '../../src/vm/guest-image.js';
import { QemuUsers } from '../../src/vm/confinement.js';
import { withProfileDefaults, type VmProfile } from '../../src/vm/profile.js';
import type { VmConfinement } from '../../src/vm/vm.js';

/**
 * Shared pieces of the VM tests: the guest image built by hack/build-guest-image, a
 * scratch root for run directories, and a scan for QEMU processes left behind.
 */

/** A profile for the built guest image (hack/build-guest-image; PODVISOR_GUEST_DIR elsewhere). */
export function guestProfile(overrides: Partial<VmProfile> = {}): VmProfile {
  const image = locateGuestImage();
  return withProfileDefaults({
    kernel: image.kernel,
    initrd: image.initrd,
    systemDisk: image.systemDisk,
    memoryMiB: 512,
    ...overrides,
  });
}

/** A fresh directory under /tmp for run directories; `remove()` deletes it. */
export function scratchRoot(tag: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(`/tmp/podvisor-vmtest-${tag}-`);
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Pids of live QEMU processes whose command line mentions `pathPart`. */
export function qemuProcessesUsing(pathPart: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.includes('qemu-system') && argv.some((a) => a.includes(pathPart))) pids.push(Number(entry));
    } catch {
      /* the process ended while we looked */
    }
  }
  return pids;
}

/**
 * What the pod layer passes a VM launch for QEMU's own uid (from `podvisor-qemu`'s range,
 * which hack/install-deps makes), without cgroup limits: for tests that launch directly.
 */
export function testConfinement(): VmConfinement {
  return { users: new QemuUsers('podvisor-qemu'), cgroupParent: '', overheadMiB: 256, pidsMax: 4096 };
}
