import { readFileSync } from 'node:fs';
import { logger } from '../src/log.js';

const log = logger('agent-signals');

export type Disposition = 'caught' | 'ignored' | 'default' | 'gone';

/** How a process treats a signal, from the SigCgt/SigIgn masks in /proc/<pid>/status. */
export function signalDisposition(pid: number, signal: number, read: (path: string) => string = (p) => readFileSync(p, 'utf8')): Disposition {
  let status: string;
  try {
    status = read(`/proc/${pid}/status`);
  } catch {
    return 'gone';
  }
  const mask = (field: 'SigCgt' | 'SigIgn'): bigint => {
    const m = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, 'm').exec(status);
    return m ? BigInt(`0x${m[1]}`) : 0n;
  };
  const bit = 1n << BigInt(signal - 1);
  if (mask('SigCgt') & bit) return 'caught';
  if (mask('SigIgn') & bit) return 'ignored';
  return 'default';
}

/**
 * The first process of a PID namespace only receives the signals it handles
 * (and SIGKILL/SIGSTOP): the kernel drops the rest. A stop signal that lands
 * while a container's first process is still starting, before it installs its
 * handler (`sh -c top` between exec and top's sigaction, which under TCG is a
 * long moment), would be lost and the container would sit out its whole grace
 * period. So when the signal was dropped, it is sent once more as soon as the
 * process starts handling it, within a short start-up window. A process that
 * never handles it is left to the caller's SIGKILL, as before.
 */
export async function redeliverOnceHandled(
  pid: number,
  signal: number,
  send: () => Promise<void>,
  opts: { windowMs?: number; pollMs?: number; disposition?: typeof signalDisposition } = {},
): Promise<boolean> {
  const disposition = opts.disposition ?? signalDisposition;
  const deadline = Date.now() + (opts.windowMs ?? 5000);
  while (Date.now() < deadline) {
    const d = disposition(pid, signal);
    if (d === 'gone' || d === 'ignored') return false;
    if (d === 'caught') {
      log.info({ pid, signal }, 'the container had not yet installed its handler when signalled; signalling again');
      await send();
      return true;
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 50));
  }
  return false;
}
