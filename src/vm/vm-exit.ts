import type { RunState } from './qmp-types.js';
import { consoleTail, tail, type RunDirPaths } from './run-dir.js';

/**
 * Why a pod VM ended, in podvisor's words: one classification for every backend, from what
 * QMP told podvisor (SHUTDOWN, GUEST_PANICKED, a fatal STOP) and what the run directory's
 * logs say. A backend adds only what it alone knows: how its QEMU process went.
 */

export type VmExitReason =
  /** podvisor stopped it. */
  | 'stopped'
  /** The guest powered off. */
  | 'guest-shutdown'
  /** The guest rebooted; with -no-reboot that ends the VM. */
  | 'guest-reboot'
  /** Kernel panic (pvpanic event or the panic on the console). */
  | 'guest-panic'
  /** QEMU ended on a signal or error nobody asked for (e.g. `kill -9`, OOM killer). */
  | 'crashed'
  /** QEMU paused the VM on an error it cannot continue from (KVM internal error, I/O error); podvisor ended it. */
  | 'vm-error';

export interface VmExitInfo {
  reason: VmExitReason;
  detail: string;
  at: Date;
  /** Only known when QEMU is podvisord's own child (not after a reattach). */
  exitCode?: number | null;
  signal?: NodeJS.Signals | null;
}

/** What podvisor saw of a VM's end. */
export interface VmExitFacts {
  /** The run state QEMU paused the VM in, when it did so on an error (src/vm/fatal-stop.ts). */
  fatalStatus?: RunState;
  /** A GUEST_PANICKED event came. */
  panicked: boolean;
  /** The reason of QEMU's last SHUTDOWN event. */
  shutdown?: string;
  /** podvisor was stopping the VM. */
  stoppedByPodvisor: boolean;
  /** How the QEMU process went, from the backend ("killed by SIGKILL", "libvirt destroyed the domain"). */
  how: string;
}

export function classifyExit(f: VmExitFacts, paths: RunDirPaths): { reason: VmExitReason; detail: string } {
  const { shutdown } = f;
  const said = qemuSaid(paths);
  if (f.fatalStatus === 'guest-panicked') return { reason: 'guest-panic', detail: `the guest kernel panicked; QEMU paused the VM (guest-panicked)${said}` };
  if (f.fatalStatus) return { reason: 'vm-error', detail: `QEMU paused the VM on an error (${f.fatalStatus})${said}` };
  if (f.panicked || shutdown === 'guest-panic') return { reason: 'guest-panic', detail: `the guest kernel panicked (pvpanic)${said}` };
  if (shutdown === 'guest-reset' && consoleShowsPanic(paths)) {
    return { reason: 'guest-panic', detail: `the guest kernel panicked${said}` };
  }
  if (f.stoppedByPodvisor) return { reason: 'stopped', detail: `stopped by podvisor (${shutdown ?? f.how})` };
  if (shutdown === 'guest-shutdown') return { reason: 'guest-shutdown', detail: 'the guest powered off' };
  if (shutdown === 'guest-reset') return { reason: 'guest-reboot', detail: `the guest rebooted${said}` };
  if (shutdown) return { reason: 'crashed', detail: `QEMU shut down: ${shutdown}${said}` };
  return { reason: 'crashed', detail: `QEMU ended without shutting down (${f.how})${said}` };
}

function consoleShowsPanic(paths: RunDirPaths): boolean {
  return /Kernel panic - not syncing/.test(consoleTail(paths, 8192));
}

/**
 * What QEMU and the guest last said, for error messages: the tail of qemu.log (QEMU's own
 * messages, when the backend sends them there) and of the console, bounded reads both.
 */
function qemuSaid(paths: RunDirPaths): string {
  const qemu = tail(paths.qemuLog, 600);
  const guest = consoleTail(paths, 8192);
  const lines = (t: string) => t.split('\n').map((l) => l.trim()).filter(Boolean);
  // A panic's own line says more than the stack trace after it.
  const panic = lines(guest).filter((l) => /Kernel panic - not syncing/.test(l)).at(-1);
  return [
    qemu ? `; QEMU said: ${lines(qemu).slice(-6).join(' | ')}` : '',
    panic ? `; panic: ${panic.replace(/^\[[\s\d.]+\]\s*/, '').slice(0, 300)}` : '',
    guest ? `; console: ${lines(guest).slice(-4).join(' | ').slice(-600)}` : '',
  ].join('');
}
