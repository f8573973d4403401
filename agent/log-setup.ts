import { writeSync } from 'node:fs';
import { Writable } from 'node:stream';
import { configureLogging } from '../src/log.js';
import { EventHub } from './events.js';

/**
 * The agent's logging, set up before any other agent module is evaluated
 * (main.ts imports this first), so that every module-level `logger(...)` is a
 * child of this root: each JSON line goes to the console (the VM's serial log
 * on the host) and, as a GuestLog event, through the channel.
 *
 * This module runs when the V8 startup snapshot is built, not in the guest:
 * nothing here may capture per-process state. So the records carry no
 * pid/hostname (they would be the build host's), and the console is written
 * through fd 2 at write time rather than a stream object made at build time.
 */
export const hub = new EventHub();

const PINO_LEVELS: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };

export function agentLogDestination(events: EventHub, writeConsole: (chunk: Buffer) => void = (chunk) => { writeSync(2, chunk); }): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      try {
        writeConsole(chunk);
      } catch {
        // a console that cannot take more must not stop forwarding
      }
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        let level = 'info';
        let time = Date.now();
        try {
          const rec = JSON.parse(line) as { level?: number; time?: number };
          level = PINO_LEVELS[rec.level ?? 30] ?? 'info';
          time = rec.time ?? time;
        } catch {
          // not JSON: forward as is
        }
        events.publish({ log: { source: 'AGENT', level, message: line, timeUnixNanos: time * 1e6 } });
      }
      done();
    },
  });
}

// src/log.ts keeps the root this replaces alive: pino registers its stream in a
// FinalizationRegistry, and a collected root would make the V8 snapshot fail.
configureLogging(process.env.PODVISOR_AGENT_LOG_LEVEL ?? 'info', agentLogDestination(hub), { base: null });
