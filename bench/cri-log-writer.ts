/**
 * The CRI log writer's cost per 64 KiB chunk of container output, for the
 * shapes a container can print: empty lines (`yes ''`, the worst case: one
 * ~40-byte record per input byte), two-byte lines (`yes x`) and 80-character
 * lines (the baseline, in the same run). Output goes to a real file; like the
 * sandbox throttle, the bench waits for the disk whenever 4 MiB are queued.
 * Prints mean and max event-loop time per chunk and each shape's ratio to the
 * baseline.
 *
 *   node --import tsx bench/cri-log-writer.ts [--mib 16]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
    let total = 0;
    let max = 0;
    for (let i = 0; i < chunks; i++) {
      const t0 = performance.now();
      w.write('stdout', chunk);
      const ms = performance.now() - t0;
      total += ms;
      max = Math.max(max, ms);
      if (w.queuedBytes > 4 << 20) await w.flush();
    }
    await w.close();
    const mean = total / chunks;
    if (baseline === 0) baseline = mean;
    console.log(`${label.padEnd(22)} ${mean.toFixed(2)} ms mean, ${max.toFixed(1)} ms max per 64 KiB chunk; ${(chunks * CHUNK / 2 ** 20 / (total / 1000)).toFixed(0)} MiB/s of input on the event loop; ${(mean / baseline).toFixed(1)}x the 80-character baseline`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
