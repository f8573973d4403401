import { readFileSync } from 'node:fs';

/**
 * Reading a process from /proc. A QEMU that podvisord reattached to is not its child, so
 * there is no waitpid: liveness comes from /proc/<pid>/stat, and the start time in the
 * same file tells a recycled pid from the QEMU we launched.
 */

export interface ProcStat {
  /** One-letter state: R, S, D, Z (zombie), X (dead) … */
  state: string;
  /** Start time in clock ticks after boot (field 22). */
  startTime: string;
}

export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0] ?? '?', startTime: fields[19] ?? '' };
}

/** Alive means present and not a zombie: a zombie has exited and only waits for its parent. */
export function isProcessAlive(pid: number, startTime?: string): boolean {
  const st = readProcStat(pid);
  if (!st || st.state === 'Z' || st.state === 'X') return false;
  return startTime === undefined || st.startTime === startTime;
}

export function readCmdline(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const args = raw.split('\0');
    if (args.at(-1) === '') args.pop();
    return args;
  } catch {
    return undefined;
  }
}
