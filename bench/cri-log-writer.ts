/**
 * The CRI log writer's cost per 64 KiB chunk of container output, for the
 * shapes a container can print: empty lines (`yes ''`, the worst case: one
 * ~40-byte record per input byte), two-byte lines (`yes x`) and 80-character
 * lines (the baseline, in the same run). Output goes to a real file; like the
 * sandbox throttle, the bench waits for the disk whenever 4 MiB are queued.
 * Prints the event-loop time per chunk (every turn, the deferred ones too),
 * each shape's ratio to the baseline, and the event-loop delay other work
 * would have seen (p99, max).
 *
 *   node --import tsx bench/cri-log-writer.ts [--mib 16]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { CriLogWriter } from '../src/pod/cri-log-writer.js';

const { values } = parseArgs({ options: { mib: { type: 'string', default: '16' } } });
const chunks = Number(values.mib) * 16;
const CHUNK = 64 << 10;
const shapes: Array<[string, Buffer]> = [
  ['80-character lines', Buffer.from(('y'.repeat(79) + '\n').repeat(Math.floor(CHUNK / 80)))],
  ["empty lines (yes '')", Buffer.alloc(CHUNK, 0x0a)],
  ['2-byte lines (yes x)', Buffer.from('x\n'.repeat(CHUNK / 2))],
];

const dir = mkdtempSync(join(tmpdir(), 'pv-bench-log-'));
try {
  let baseline = 0;
  for (const [label, chunk] of shapes) {
    const w = await CriLogWriter.open(join(dir, `${label.length}.log`));
    // Event-loop time spent (all turns, including the deferred ones) and the longest stall.
    const delay = monitorEventLoopDelay({ resolution: 1 });
    delay.enable();
    const elu0 = performance.eventLoopUtilization();
    const t0 = performance.now();
    for (let i = 0; i < chunks; i++) {
      w.write('stdout', chunk);
      if (w.queuedBytes > 4 << 20) await w.flush();
      else await new Promise((r) => setImmediate(r)); // as between two agent events
    }
    await w.close();
    const wallMs = performance.now() - t0;
    const elu = performance.eventLoopUtilization(elu0);
    delay.disable();
    const busyPerChunk = (elu.active / chunks);
    if (baseline === 0) baseline = busyPerChunk;
    console.log(`${label.padEnd(22)} ${busyPerChunk.toFixed(2)} ms of event loop per 64 KiB chunk (${(busyPerChunk / baseline).toFixed(1)}x the 80-character baseline); `
      + `event-loop delay p99 ${(delay.percentile(99) / 1e6).toFixed(1)} ms, max ${(delay.max / 1e6).toFixed(1)} ms; ${(chunks * CHUNK / 2 ** 20 / (wallMs / 1000)).toFixed(1)} MiB/s of input`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
