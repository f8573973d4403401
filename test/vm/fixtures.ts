import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { withProfileDefaults, type VmProfile } from '../../src/vm/profile.js';

/**
 * Shared pieces of the VM tests: the guest image built by hack/build-guest-image, a
 * scratch root for run directories, and a scan for QEMU processes left behind.
 */

export function guestDir(): string {
  return resolve(process.env.PODVISOR_GUEST_DIR ?? 'out/guest');
}

export function guestProfile(overrides: Partial<VmProfile> = {}): VmProfile {
  const dir = guestDir();
  const kernel = join(dir, 'vmlinux');
  if (!existsSync(kernel)) {
    throw new Error(`no guest kernel at ${kernel}: run hack/build-guest-image first (or set PODVISOR_GUEST_DIR)`);
  }
  return withProfileDefaults({
    kernel,
    initrd: join(dir, 'initrd.img'),
    systemDisk: join(dir, 'system.erofs'),
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
