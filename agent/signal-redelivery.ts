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

/** How long a dropped stop signal is watched for at most (the caller's SIGKILL normally ends it first). */
const WATCH_LIMIT_MS = 10 * 60_000;
const FIRST_POLL_MS = 50;
const MAX_POLL_MS = 500;

/**
 * The first process of a PID namespace only receives the signals it handles
 * (and SIGKILL/SIGSTOP): the kernel drops the rest. A stop signal that lands
 * while a container's first process is still starting, before it installs its
 * handler, would be lost and the container would sit out its whole grace
 * period. Under TCG that start-up is long: busybox `top` (critest's `sh -c top`)
 * was seen handling SIGTERM 1.6 s after it had exec'd at load 11, and a 5 s
 * window at a heavier load let one stop run into its 60 s SIGKILL. So when the
 * signal was dropped, the process is watched until it handles the signal (then
 * it is sent once more), ignores it, or ends (`until` settles: the container's
 * exit, which also rules out signalling a reused pid), bounded by `windowMs`.
 * Polls start at 50 ms and back off to 0.5 s: a process that never handles the
 * signal costs two reads of /proc a second until the caller's SIGKILL.
 */
export async function redeliverOnceHandled(
  pid: number,
  signal: number,
  send: () => Promise<void>,
  opts: { until?: Promise<unknown>; windowMs?: number; pollMs?: number; maxPollMs?: number; disposition?: typeof signalDisposition } = {},
): Promise<boolean> {
  const disposition = opts.disposition ?? signalDisposition;
  const deadline = Date.now() + (opts.windowMs ?? WATCH_LIMIT_MS);
  let ended = false;
  void opts.until?.then(() => { ended = true; }, () => { ended = true; });
  let pollMs = opts.pollMs ?? FIRST_POLL_MS;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, pollMs));
    if (ended) return false;
    const d = disposition(pid, signal);
    if (d === 'gone' || d === 'ignored') return false;
    if (d === 'caught') {
      log.info({ pid, signal }, 'the container had not yet installed its handler when signalled; signalling again');
      await send();
      return true;
    }
    pollMs = Math.min(pollMs * 2, opts.maxPollMs ?? MAX_POLL_MS);
  }
  return false;
}
