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

/** Forwards the kernel log (from the start of the ring buffer) as GuestLog events. */
export function forwardKernelLog(hub: EventHub, uptimeSeconds: () => number): void {
  const log = logger('agent-kmsg');
  try {
    // /dev/kmsg is pollable: the same evented handle as the agent port.
    const socket = openCharDevice('/dev/kmsg');
    const bootTimeMs = Date.now() - uptimeSeconds() * 1000;
    socket.on('data', (chunk: Buffer) => {
      // Each read returns exactly one record.
      const rec = parseKmsg(chunk.toString('utf8'), bootTimeMs);
      if (rec) hub.publish({ log: { source: 'KERNEL', ...rec } });
    });
    socket.on('error', (err) => log.warn({ err: err.message }, 'kernel log forwarding stopped'));
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'cannot read /dev/kmsg');
  }
}
