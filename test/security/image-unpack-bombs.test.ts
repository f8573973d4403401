import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import { pack } from 'tar-stream';
import { unpackLayers, UnpackBudget, MAX_NOTED_ENTRIES } from '../../src/image/unpack.js';

/**
 * Tenant images cost what they weigh (security review 2026-12-01):
 * C2 (skipped entries kept 4 MiB names in memory and the log, charged 512 B),
 * M1 (the directory-times pass followed a symlink a later entry put in place),
 * L6 (decoded bytes that are not file data were not bounded).
 */

async function gzipOf(fill: (p: ReturnType<typeof pack>) => void): Promise<Buffer> {
  const p = pack();
  fill(p);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of Readable.from(p as unknown as AsyncIterable<Buffer>).pipe(createGzip())) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const layerOf = (data: Buffer, name = 'test layer') => ({ name, open: async function* () { yield data; } });

async function withRoot(fn: (base: string, root: string) => Promise<void>): Promise<void> {
  const base = await mkdtemp(join(tmpdir(), 'pv-sec-unpack-'));
  const root = join(base, 'root');
  await (await import('node:fs/promises')).mkdir(root);
  try {
    await fn(base, root);
  } finally {
    await rm(base, { recursive: true, force: true });
  }
}

test('C2: a layer of device nodes with 1 MiB names is refused, keeping nothing', () => withRoot(async (_base, root) => {
  const layer = await gzipOf((p) => {
    for (let i = 0; i < 50; i++) p.entry({ name: `d${i}` + 'x'.repeat(1 << 20), type: 'character-device', devmajor: 1, devminor: 3, mode: 0o600 });
  });
  const before = process.memoryUsage().heapUsed;
  await assert.rejects(unpackLayers(root, [layerOf(layer)], new UnpackBudget(1 << 30)), (e: Error & { code?: string }) =>
    e.code === 'FAILED_PRECONDITION' && /longer than 4096/.test(e.message) && e.message.length < 2000);
  assert.ok(process.memoryUsage().heapUsed - before < 64 << 20);
}));

test('C2: skipped entries are counted, only the first few named, and charged their header', () => withRoot(async (_base, root) => {
  const layer = await gzipOf((p) => {
    for (let i = 0; i < 500; i++) p.entry({ name: `dev/n${i}-${'y'.repeat(3000)}`, type: 'fifo', mode: 0o600 });
  });
  const budget = new UnpackBudget(1 << 30);
  const notes = await unpackLayers(root, [layerOf(layer)], budget);
  assert.equal(notes.skippedCount, 500);
  assert.equal(notes.skipped.length, MAX_NOTED_ENTRIES);
  assert.ok(budget.used >= 500 * 3000, `charged ${budget.used} bytes for 500 names of 3000 characters`);
}));

test('M1: the directory-times pass does not follow a symlink that replaced the directory', () => withRoot(async (base, root) => {
  const victim = join(base, 'victim.txt');
  await writeFile(victim, 'host file');
  const then = new Date('2026-01-01T00:00:00Z');
  await utimes(victim, then, then);
  const p = pack();
  p.entry({ name: 'a/', type: 'directory', mode: 0o755, mtime: new Date('1999-12-31T00:00:00Z') });
  p.entry({ name: 'a', type: 'symlink', linkname: victim, mode: 0o777, mtime: new Date('2000-01-01T00:00:00Z') });
  p.entry({ name: 'x/y/', type: 'directory', mode: 0o755, mtime: new Date('1999-12-31T00:00:00Z') });
  p.entry({ name: 'x', type: 'symlink', linkname: base, mode: 0o777, mtime: new Date('2000-01-01T00:00:00Z') });
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p as unknown as AsyncIterable<Buffer>) chunks.push(c);
  await unpackLayers(root, [layerOf(Buffer.concat(chunks))], new UnpackBudget(1 << 30));
  assert.equal((await stat(victim)).mtime.toISOString(), then.toISOString());
}));

test('L6: decoded bytes beyond twice the budget are refused (a gzip of zero blocks)', () => withRoot(async (_base, root) => {
  // 64 MiB of zeros: tar-stream reads it as end-of-archive blocks, no entry is charged.
  const zeros = await new Promise<Buffer>((resolve) => {
    const gz = createGzip();
    const out: Buffer[] = [];
    gz.on('data', (c: Buffer) => out.push(c));
    gz.on('end', () => resolve(Buffer.concat(out)));
    const block = Buffer.alloc(1 << 20);
    for (let i = 0; i < 64; i++) gz.write(block);
    gz.end();
  });
  await assert.rejects(unpackLayers(root, [layerOf(zeros)], new UnpackBudget(8 << 20)), { code: 'RESOURCE_EXHAUSTED' });
}));
