import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, readFileSync } from 'node:fs';
import { failedPrecondition } from '../errors.js';
import { logger } from '../log.js';
import type { AccelChoice } from './profile.js';

/**
 * Facts about the host that shape the QEMU command line: which accelerator works and the
 * TSC frequency the guest must be told about. Both are read once and cached.
 */

const log = logger('vm');

export interface Acceleration {
  accel: 'kvm' | 'tcg';
  /** Why this accelerator was chosen, for Status and the logs. */
  reason: string;
}

let detected: Acceleration | undefined;

/** KVM when /dev/kvm opens read-write, TCG otherwise. Exported for the Status RPC. */
export function hostAcceleration(): Acceleration {
  if (detected) return detected;
  try {
    closeSync(openSync('/dev/kvm', constants.O_RDWR));
    detected = { accel: 'kvm', reason: '/dev/kvm is usable' };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    detected = { accel: 'tcg', reason: `/dev/kvm cannot be opened (${code}); using TCG emulation` };
  }
  log.info({ accel: detected.accel, reason: detected.reason }, 'VM accelerator chosen');
  return detected;
}

/** Resolves a profile's accelerator choice; asking for KVM where it is missing is an error. */
export function resolveAccel(choice: AccelChoice): 'kvm' | 'tcg' {
  const host = hostAcceleration();
  if (choice === 'auto') return host.accel;
  if (choice === 'kvm' && host.accel !== 'kvm') {
    throw failedPrecondition(`the VM profile asks for KVM but ${host.reason}`);
  }
  return choice;
}

let tscKhz: number | undefined;

/**
 * The host TSC frequency in kHz. A microvm guest has no PIT/HPET to calibrate against, and
 * without `tsc_early_khz` some boots hang, so this is mandatory on the kernel command line.
 * Sources, best first: the kernel's sysfs value (some kernels), the kernel's own
 * calibration in the boot log, then the nominal frequency in /proc/cpuinfo.
 */
export function hostTscKhz(): number {
  if (tscKhz !== undefined) return tscKhz;
  tscKhz = fromSysfs() ?? fromKernelLog() ?? fromCpuinfo();
  if (tscKhz === undefined) {
    throw failedPrecondition('cannot read the host TSC frequency (no tsc_freq_khz, boot log or "cpu MHz"); set tscKhz in the VM profile');
  }
  return tscKhz;
}

function fromSysfs(): number | undefined {
  try {
    const v = Number.parseInt(readFileSync('/sys/devices/system/cpu/cpu0/tsc_freq_khz', 'utf8'), 10);
    return v > 0 ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Parses "tsc: Refined TSC clocksource calibration: 2096.004 MHz" or "tsc: Detected 2096.004 MHz processor". */
export function tscKhzFromKernelLog(text: string): number | undefined {
  const refined = /tsc: Refined TSC clocksource calibration: (\d+)\.(\d{3}) MHz/.exec(text);
  const detectedLine = /tsc: Detected (\d+)\.(\d{3}) MHz/.exec(text);
  const m = refined ?? detectedLine;
  return m ? Number(m[1]) * 1000 + Number(m[2]) : undefined;
}

function fromKernelLog(): number | undefined {
  try {
    const out = execFileSync('dmesg', [], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
    return tscKhzFromKernelLog(out);
  } catch {
    return undefined;
  }
}

/** Parses the first "cpu MHz : 2096.004" line into kHz. */
export function tscKhzFromCpuinfo(text: string): number | undefined {
  const m = /^cpu MHz\s*:\s*(\d+)(?:\.(\d+))?/m.exec(text);
  if (!m) return undefined;
  const frac = (m[2] ?? '0').padEnd(3, '0').slice(0, 3);
  return Number(m[1]) * 1000 + Number(frac);
}

function fromCpuinfo(): number | undefined {
  try {
    return tscKhzFromCpuinfo(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return undefined;
  }
}

const seccompSupport = new Map<string, boolean>();

/** Whether this QEMU binary was built with seccomp, i.e. accepts `-sandbox`. */
export function qemuHasSandbox(binary: string): boolean {
  let known = seccompSupport.get(binary);
  if (known === undefined) {
    try {
      const help = execFileSync(binary, ['-help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
      known = /^-sandbox /m.test(help);
    } catch (e) {
      // A binary that does not run at all is reported by the launch itself.
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      known = false;
    }
    seccompSupport.set(binary, known);
    if (!known) log.warn({ binary }, 'QEMU has no -sandbox (seccomp) support; VMs run without a syscall filter');
  }
  return known;
}
