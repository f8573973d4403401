import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { failedPrecondition } from '../errors.js';
import { logger } from '../log.js';
import { probeKvm, type KvmProbeOptions } from './kvm-probe.js';
import type { AccelChoice } from './profile.js';

/**
 * Facts about the host that shape the QEMU command line: which accelerator works and the
 * TSC frequency the guest must be told about. Both are read once and cached.
 */

const log = logger('vm');

export interface Acceleration {
  /** What `auto` resolves to. */
  accel: 'kvm' | 'tcg';
  /** Whether the KVM probe ran a guest; false while it runs. */
  kvmUsable: boolean;
  /** Why this accelerator was chosen, for Status and the logs. */
  reason: string;
  /** The probe's wall time (ms); absent while it runs. */
  probeMs?: number;
  probing: boolean;
}

let probe: Promise<Acceleration> | undefined;
let settled: Acceleration | undefined;

/**
 * Runs the KVM probe (src/vm/kvm-probe.ts) once for this process and caches the answer for
 * the daemon's life. The daemon calls it at start; the first launch calls it otherwise.
 * Later calls return the first call's answer whatever their options.
 */
export function startAccelProbe(opts: KvmProbeOptions = {}): Promise<Acceleration> {
  probe ??= probeKvm(opts).then((r) => {
    settled = r.usable
      ? { accel: 'kvm', kvmUsable: true, reason: r.reason, probeMs: r.ms, probing: false }
      : { accel: 'tcg', kvmUsable: false, reason: `${r.reason}; using TCG emulation`, probeMs: r.ms, probing: false };
    if (settled.kvmUsable) log.info({ accel: 'kvm', reason: settled.reason, probeMs: r.ms }, 'VM accelerator chosen');
    else log.warn({ accel: 'tcg', reason: settled.reason, probeMs: r.ms }, 'VM accelerator chosen: KVM cannot run guests here; TCG is not a security boundary');
    return settled;
  });
  return probe;
}

/** The cached answer, for Status; says "probing" while the probe still runs. */
export function hostAcceleration(): Acceleration {
  return settled ?? { accel: 'tcg', kvmUsable: false, reason: probe ? 'the KVM probe is still running' : 'the KVM probe has not run yet', probing: true };
}

/**
 * Resolves a profile's accelerator choice against the probe: `auto` takes KVM only where
 * the probe ran a guest; `kvm` where it did not is refused at once with the probe's reason,
 * never quietly run under TCG.
 */
export async function resolveAccel(choice: AccelChoice): Promise<'kvm' | 'tcg'> {
  if (choice === 'tcg') return 'tcg';
  return chooseAccel(choice, await startAccelProbe());
}

/** The decision itself, apart from the probe. */
export function chooseAccel(choice: AccelChoice, host: Acceleration): 'kvm' | 'tcg' {
  if (choice === 'tcg') return 'tcg';
  if (choice === 'auto') return host.accel;
  if (!host.kvmUsable) throw failedPrecondition(`the VM profile asks for accel = "kvm" but KVM cannot run guests on this host: ${host.reason.replace(/; using TCG emulation$/, '')}`);
  return 'kvm';
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

/** Whether this QEMU binary was built with seccomp, i.e. accepts `-sandbox`; undefined when it is not there. */
export function qemuHasSandbox(binary: string): boolean | undefined {
  let known = seccompSupport.get(binary);
  if (known === undefined) {
    try {
      const help = execFileSync(binary, ['-help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
      known = /^-sandbox /m.test(help);
    } catch (e) {
      // A binary that does not run at all is reported by the launch itself.
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      known = false;
    }
    seccompSupport.set(binary, known);
    if (!known) log.warn({ binary }, 'QEMU has no -sandbox (seccomp) support; VMs start only where [vm] allow_no_seccomp = true');
  }
  return known;
}
