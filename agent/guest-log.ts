import { logger } from '../src/log.js';
import type { EventHub } from './events.js';
import { openCharDevice } from './channel.js';

const KERNEL_LEVELS = ['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug'];

/** Parses one /dev/kmsg record: "prio,seq,usec,flags;text\n continuation...". */
export function parseKmsg(record: string, bootTimeMs: number): { level: string; message: string; timeUnixNanos: number } | undefined {
  const semi = record.indexOf(';');
  if (semi < 0) return undefined;
  const [prio, , usec] = record.slice(0, semi).split(',');
  const text = record.slice(semi + 1).split('\n')[0];
  return { level: KERNEL_LEVELS[Number(prio) & 7] ?? 'info', message: text, timeUnixNanos: Math.round((bootTimeMs + Number(usec) / 1000) * 1e6) };
}

/** Boot messages below this severity (info, debug) stay in the guest's ring buffer. */
const BACKLOG_LEVELS = new Set(['emerg', 'alert', 'crit', 'err', 'warning', 'notice']);

/** Whether a kernel record goes to the host: all from `backlogBeforeNanos` on, notices and worse before. */
export function forwardable(rec: { level: string; timeUnixNanos: number }, backlogBeforeNanos: number): boolean {
  return rec.timeUnixNanos >= backlogBeforeNanos || BACKLOG_LEVELS.has(rec.level);
}

/**
 * Forwards the kernel log as GuestLog events: everything logged from now on, and of what the
 * ring buffer already holds (the boot), the notices, warnings and errors. The boot's info lines
 * (about 200 under `quiet`) went out one event each just as the host's first calls (NIC, mounts,
 * containers) needed the channel and the emulated vCPU: they arrived over tens of seconds, and a
 * NIC set-up that took 3.7 s in the guest took 9.7 s on the host. `dmesg` in the guest still has them.
 */
export function forwardKernelLog(hub: EventHub, uptimeSeconds: () => number): void {
  const log = logger('agent-kmsg');
  try {
    // /dev/kmsg is pollable: the same evented handle as the agent port.
    const socket = openCharDevice('/dev/kmsg');
    const nowMs = Date.now();
    const bootTimeMs = nowMs - uptimeSeconds() * 1000;
    const backlogBeforeNanos = nowMs * 1e6;
    socket.on('data', (chunk: Buffer) => {
      // Each read returns exactly one record.
      const rec = parseKmsg(chunk.toString('utf8'), bootTimeMs);
      if (rec && forwardable(rec, backlogBeforeNanos)) hub.publish({ log: { source: 'KERNEL', ...rec } });
    });
    socket.on('error', (err) => log.warn({ err: err.message }, 'kernel log forwarding stopped'));
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'cannot read /dev/kmsg');
  }
}
