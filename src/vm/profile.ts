import { invalidArgument } from '../errors.js';

/**
 * Where guest RAM lives.
 * - `anonymous`: ordinary QEMU RAM (the default).
 * - `file`: a `memory-backend-file`. `memPath` is either a directory (QEMU makes an
 *   unlinked file in it, e.g. under a tmpfs) or a file (a saved template's RAM image).
 *   `share: true` is for a template VM, whose RAM must reach the file; clones map the
 *   template's file with `share: false` so their writes stay private (copy-on-write).
 */
export type GuestMemory =
  | { kind: 'anonymous' }
  | { kind: 'file'; memPath: string; share: boolean };

export type Machine = 'microvm' | 'q35';
export type AccelChoice = 'auto' | 'kvm' | 'tcg';

/**
 * Everything that decides what the guest sees. Two VMs launched from equal profiles get
 * the same device set in the same order — the precondition for cloning one VM's saved
 * state into another (VM templates).
 */
export interface VmProfile {
  machine: Machine;
  vcpus: number;
  memoryMiB: number;
  /** Raw (uncompressed) kernel ELF, booted through PVH. */
  kernel: string;
  initrd?: string;
  /** Read-only disk attached at boot as SCSI target 0, LUN 0. */
  systemDisk?: string;
  /** Appended after podvisor's own kernel arguments. */
  kernelArgs: string[];
  accel: AccelChoice;
  memory?: GuestMemory;
  /** QEMU binary; `qemu-system-x86_64` from PATH when unset. */
  qemuBinary?: string;
  /** Overrides the host TSC frequency read from the host (kHz). */
  tscKhz?: number;
  /**
   * Size of TCG's translation cache (`-accel tcg,tb-size=`), MiB; unset: QEMU's default (1 GiB
   * on x86-64 hosts, filled as the guest runs new code and never given back). Ignored under KVM.
   */
  tcgTbSizeMiB?: number;
  /**
   * A virtio-balloon device with free-page reporting: the guest hands pages it freed back to
   * the host (QEMU discards them), so memory touched once at boot does not stay charged. It is
   * a device, so template and clones must agree on it (equal profiles do).
   */
  freePageReporting?: boolean;
}

export const DEFAULT_QEMU_BINARY = 'qemu-system-x86_64';

/** Fills in the optional parts of a profile with their defaults. */
export function withProfileDefaults(p: Partial<VmProfile> & Pick<VmProfile, 'kernel'>): VmProfile {
  return {
    machine: p.machine ?? 'microvm',
    vcpus: p.vcpus ?? 1,
    memoryMiB: p.memoryMiB ?? 512,
    kernel: p.kernel,
    initrd: p.initrd,
    systemDisk: p.systemDisk,
    kernelArgs: p.kernelArgs ?? [],
    accel: p.accel ?? 'auto',
    memory: p.memory ?? { kind: 'anonymous' },
    qemuBinary: p.qemuBinary,
    tscKhz: p.tscKhz,
    tcgTbSizeMiB: p.tcgTbSizeMiB,
    freePageReporting: p.freePageReporting,
  };
}

const MAX_VCPUS = 255;
const MIN_MEMORY_MIB = 64;

/** Rejects a profile QEMU would refuse or that would hand the guest something odd. */
export function validateProfile(p: VmProfile): void {
  if (p.machine !== 'microvm' && p.machine !== 'q35') {
    throw invalidArgument(`VM profile: machine must be "microvm" or "q35", got ${JSON.stringify(p.machine)}`);
  }
  if (!Number.isInteger(p.vcpus) || p.vcpus < 1 || p.vcpus > MAX_VCPUS) {
    throw invalidArgument(`VM profile: vcpus must be an integer from 1 to ${MAX_VCPUS}, got ${p.vcpus}`);
  }
  if (!Number.isInteger(p.memoryMiB) || p.memoryMiB < MIN_MEMORY_MIB) {
    throw invalidArgument(`VM profile: memoryMiB must be an integer of at least ${MIN_MEMORY_MIB}, got ${p.memoryMiB}`);
  }
  if (!p.kernel) throw invalidArgument('VM profile: a kernel path is required');
  if (p.tcgTbSizeMiB !== undefined && (!Number.isInteger(p.tcgTbSizeMiB) || p.tcgTbSizeMiB < 1 || p.tcgTbSizeMiB > 4096)) {
    throw invalidArgument(`VM profile: tcgTbSizeMiB must be an integer from 1 to 4096, got ${p.tcgTbSizeMiB}`);
  }
  if (!['auto', 'kvm', 'tcg'].includes(p.accel)) {
    throw invalidArgument(`VM profile: accel must be "auto", "kvm" or "tcg", got ${JSON.stringify(p.accel)}`);
  }
  for (const arg of p.kernelArgs) {
    // The command line is one QEMU option value: a comma would be read as an option separator
    // only in -M append=..., which we do not use, but a newline or NUL would truncate it.
    if (/[\n\r\0]/.test(arg) || arg.trim() === '') {
      throw invalidArgument(`VM profile: kernel argument ${JSON.stringify(arg)} is empty or has control characters`);
    }
  }
  if (p.tscKhz !== undefined && (!Number.isInteger(p.tscKhz) || p.tscKhz <= 0)) {
    throw invalidArgument(`VM profile: tscKhz must be a positive integer, got ${p.tscKhz}`);
  }
  if (p.memory?.kind === 'file' && !p.memory.memPath) {
    throw invalidArgument('VM profile: a file-backed guest memory needs memPath');
  }
}
