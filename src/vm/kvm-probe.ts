import { spawn } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { messageOf } from '../errors.js';
import { DEFAULT_QEMU_BINARY } from './profile.js';

/**
 * Whether KVM really runs a guest on this host. `/dev/kvm` opening is not enough: nested
 * virtualisation without VMX, or a half-working KVM, opens fine and then stops the guest
 * with "KVM internal error". So the probe boots a guest of a few instructions under KVM:
 * a 64 KiB firmware whose reset vector writes one byte to QEMU's `isa-debug-exit` port,
 * which makes QEMU exit with a known status. That status can only come from guest code
 * that ran. Cost: one QEMU start (about 0.1 s with KVM), once per daemon.
 */

export interface KvmProbeOptions {
  /** The device that must open read-write first (tests point it at a fake file). */
  device?: string;
  qemuBinary?: string;
  /** How long the test guest may take; a guest that hangs (a stuck KVM) fails the probe. */
  timeoutMs?: number;
  /** Accelerator the test guest runs under; only tests of the probe itself change it. */
  accel?: 'kvm' | 'tcg';
}

export interface KvmProbeResult {
  usable: boolean;
  /** Why (not), in words an operator can act on. */
  reason: string;
  /** Wall time the probe took. */
  ms: number;
}

/** The byte the firmware writes to the exit port; QEMU exits with (byte << 1) | 1. */
const PROBE_BYTE = 0x2a;
const PROBE_EXIT_CODE = (PROBE_BYTE << 1) | 1;
const DEBUG_EXIT_PORT = 0xf4;
const DEFAULT_TIMEOUT_MS = 5000;
const MAX_OUTPUT = 4096;

/**
 * The firmware: 64 KiB (QEMU's required multiple) mapped below 4 GiB, with the reset vector
 * (16 bytes from the end) holding `mov al, PROBE_BYTE; out DEBUG_EXIT_PORT, al; hlt`.
 */
export function probeFirmware(): Buffer {
  const rom = Buffer.alloc(64 * 1024);
  Buffer.from([0xb0, PROBE_BYTE, 0xe6, DEBUG_EXIT_PORT, 0xf4]).copy(rom, rom.length - 16);
  return rom;
}

export async function probeKvm(opts: KvmProbeOptions = {}): Promise<KvmProbeResult> {
  const t0 = performance.now();
  const device = opts.device ?? '/dev/kvm';
  const done = (usable: boolean, reason: string): KvmProbeResult => ({ usable, reason, ms: Math.round(performance.now() - t0) });
  try {
    closeSync(openSync(device, constants.O_RDWR));
  } catch (e) {
    return done(false, `${device} cannot be opened (${(e as NodeJS.ErrnoException).code ?? messageOf(e)})`);
  }
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const dir = mkdtempSync(join(tmpdir(), 'podvisor-kvm-probe-'));
  try {
    const firmware = join(dir, 'probe.rom');
    writeFileSync(firmware, probeFirmware(), { mode: 0o600 });
    const run = await runTestGuest(opts.qemuBinary ?? DEFAULT_QEMU_BINARY, opts.accel ?? 'kvm', firmware, timeoutMs);
    if (run.timedOut) {
      return done(false, `KVM did not run a test guest within ${timeoutMs} ms${run.output ? `: ${run.output}` : ''}`);
    }
    if (run.code === PROBE_EXIT_CODE) return done(true, `KVM ran a test guest (${device})`);
    const how = run.error ?? (run.signal ? `QEMU was killed by ${run.signal}` : `QEMU exited with ${run.code}`);
    return done(false, `KVM could not run a test guest: ${run.output || how}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface GuestRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  output: string;
  error?: string;
}

function runTestGuest(qemu: string, accel: 'kvm' | 'tcg', firmware: string, timeoutMs: number): Promise<GuestRun> {
  const args = [
    '-M', 'microvm,x-option-roms=off,rtc=off', '-accel', accel, '-m', '16M',
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-bios', firmware, '-device', `isa-debug-exit,iobase=${DEBUG_EXIT_PORT},iosize=1`,
  ];
  return new Promise((resolve) => {
    let output = '';
    let timedOut = false;
    let error: string | undefined;
    const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk: Buffer) => {
      if (output.length < MAX_OUTPUT) output += chunk.toString('utf8').slice(0, MAX_OUTPUT - output.length);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(timer);
      resolve({ code, signal, timedOut, output: oneLine(output), error });
    };
    // A binary that cannot be spawned emits 'error' and maybe no 'close'; resolving twice is harmless.
    child.once('error', (e) => {
      error = `cannot run ${qemu}: ${messageOf(e)}`;
      finish(null, null);
    });
    child.once('close', finish);
  });
}

function oneLine(s: string): string {
  return s.trim().split('\n').map((l) => l.trim()).filter(Boolean).join('; ');
}
