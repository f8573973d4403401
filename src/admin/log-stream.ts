import { open, stat } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { invalidArgument } from '../errors.js';
import { GUEST_LOG_FILE } from '../pod/guest-log-file.js';

/** Where a sandbox's guest logs are, in its VM run directory. */
const SOURCES: Record<string, string[]> = {
  console: ['console.log'],
  agent: [GUEST_LOG_FILE],
  all: ['console.log', GUEST_LOG_FILE],
};
const FOLLOW_POLL_MS = 250;
/** Each read while following; the guest decides how fast these files grow. */
const CHUNK_BYTES = 256 * 1024;

/**
 * Sends a sandbox's guest console (kernel and init output on the serial port)
 * and agent log: the last `tailBytes` of each, then, with `follow`, what is
 * appended until the client goes away. Lines are prefixed with their source
 * when both are sent.
 */
export async function streamSandboxLogs(
  res: ServerResponse,
  runDir: string,
  opts: { source: string; follow: boolean; tailBytes: number },
): Promise<void> {
  const files = SOURCES[opts.source];
  if (!files) throw invalidArgument(`log source must be one of ${Object.keys(SOURCES).join(', ')}, got "${opts.source}"`);
  if (!Number.isInteger(opts.tailBytes) || opts.tailBytes < 0) throw invalidArgument('tail_bytes must be a whole number of bytes');
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
  let gone = false;
  res.on('close', () => { gone = true; });
  const prefix = files.length > 1;
  const offsets = new Map<string, number>();
  const partial = new Map<string, string>();
  for (const f of files) {
    const size = await sizeOf(join(runDir, f));
    offsets.set(f, Math.max(0, size - opts.tailBytes));
    partial.set(f, '');
  }
  while (!gone) {
    let progressed = false;
    for (const f of files) {
      const text = await readFrom(join(runDir, f), offsets, f);
      if (!text) continue;
      progressed = true;
      const lines = (partial.get(f)! + text).split('\n');
      partial.set(f, lines.pop()!);
      if (lines.length) res.write(lines.map((l) => (prefix ? `[${f === GUEST_LOG_FILE ? 'agent' : 'console'}] ${l}` : l)).join('\n') + '\n');
    }
    if (progressed) continue;
    if (!opts.follow) break;
    await new Promise((resolve) => setTimeout(resolve, FOLLOW_POLL_MS));
  }
  for (const [f, rest] of partial) if (rest && !gone) res.write(`${prefix ? `[${f === GUEST_LOG_FILE ? 'agent' : 'console'}] ` : ''}${rest}\n`);
  res.end();
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

async function readFrom(path: string, offsets: Map<string, number>, key: string): Promise<string> {
  const size = await sizeOf(path);
  let offset = offsets.get(key)!;
  if (size < offset) offset = 0; // rotated or truncated: start over
  if (size === offset) return '';
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(Math.min(CHUNK_BYTES, size - offset));
    const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
    offsets.set(key, offset + bytesRead);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}
