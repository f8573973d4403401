import { readFileSync } from 'node:fs';
import type { ContainerStatsResponse, Pressure, PressureLine } from '../src/agent-protocol/types.js';

/** Reads one cgroup v2 file; missing files (controller not enabled) read as empty. */
function read(dir: string, file: string): string {
  try {
    return readFileSync(`${dir}/${file}`, 'utf8');
  } catch {
    return '';
  }
}

/** "key value" lines (cpu.stat, memory.stat, memory.events) as numbers. */
export function flatKeyed(text: string): Map<string, number> {
  const map = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined) map.set(key, Number(value));
  }
  return map;
}

function single(text: string): number {
  const t = text.trim();
  return t === '' || t === 'max' ? 0 : Number(t);
}

/**
 * A cgroup v2 `<resource>.pressure` file:
 *   some avg10=0.00 avg60=0.00 avg300=0.00 total=0
 *   full avg10=0.00 avg60=0.00 avg300=0.00 total=0
 * null when the file is missing or empty (no PSI in this kernel).
 */
export function parsePressure(text: string): Pressure | null {
  const out: Pressure = {};
  for (const line of text.split('\n')) {
    const [kind, ...fields] = line.trim().split(/\s+/);
    if (kind !== 'some' && kind !== 'full') continue;
    const v = new Map(fields.map((f) => f.split('=') as [string, string]));
    const data: PressureLine = { avg10: Number(v.get('avg10')), avg60: Number(v.get('avg60')), avg300: Number(v.get('avg300')), totalUsec: Number(v.get('total')) };
    if (Object.values(data).some((n) => !Number.isFinite(n))) continue;
    out[kind] = data;
  }
  return out.some || out.full ? out : null;
}

/**
 * Stats of a container from cgroup v2. `groupDir` covers every process of the
 * container (init and execs); `limitDir` is where crun applied the limits.
 */
export function cgroupStats(groupDir: string, limitDir: string): ContainerStatsResponse {
  const cpu = flatKeyed(read(groupDir, 'cpu.stat'));
  const mem = flatKeyed(read(groupDir, 'memory.stat'));
  const events = flatKeyed(read(groupDir, 'memory.events'));
  const current = single(read(groupDir, 'memory.current'));
  const io = { readBytes: 0, writeBytes: 0, readOps: 0, writeOps: 0 };
  for (const line of read(groupDir, 'io.stat').split('\n')) {
    for (const field of line.split(' ').slice(1)) {
      const [k, v] = field.split('=');
      const n = Number(v) || 0;
      if (k === 'rbytes') io.readBytes += n;
      else if (k === 'wbytes') io.writeBytes += n;
      else if (k === 'rios') io.readOps += n;
      else if (k === 'wios') io.writeOps += n;
    }
  }
  return {
    cpu: { usageUsec: cpu.get('usage_usec') ?? 0, userUsec: cpu.get('user_usec') ?? 0, systemUsec: cpu.get('system_usec') ?? 0, throttledUsec: cpu.get('throttled_usec') ?? 0 },
    memory: {
      currentBytes: current,
      limitBytes: single(read(limitDir, 'memory.max')),
      anonBytes: mem.get('anon') ?? 0,
      fileBytes: mem.get('file') ?? 0,
      workingSetBytes: Math.max(0, current - (mem.get('inactive_file') ?? 0)),
      oomKills: events.get('oom_kill') ?? 0,
    },
    pids: { current: single(read(groupDir, 'pids.current')), limit: single(read(limitDir, 'pids.max')) },
    io,
    timestampUnixNanos: Date.now() * 1e6,
    cpuPressure: parsePressure(read(groupDir, 'cpu.pressure')),
    memoryPressure: parsePressure(read(groupDir, 'memory.pressure')),
    ioPressure: parsePressure(read(groupDir, 'io.pressure')),
    // Counted only where memory.stat has them; never reported as a made-up 0.
    pageFaults: mem.has('pgfault') ? { faults: mem.get('pgfault')!, majorFaults: mem.get('pgmajfault') ?? 0 } : null,
  };
}
