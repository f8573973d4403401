import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CriLogWriter } from '../../src/pod/cri-log-writer.js';
import { rfc3339Nano } from '../../src/pod/clock.js';

const LINE = /^(\S+) (stdout|stderr) ([PF]) (.*)$/;

function parse(text: string): Array<{ ts: string; stream: string; tag: string; text: string }> {
  assert.ok(text === '' || text.endsWith('\n'), 'every record ends with a newline');
  return text.split('\n').slice(0, -1).map((l) => {
    const m = LINE.exec(l);
    assert.ok(m, `not a CRI log line: ${JSON.stringify(l)}`);
    return { ts: m[1]!, stream: m[2]!, tag: m[3]!, text: m[4]! };
  });
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'podvisor-log-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('timestamps are RFC3339Nano in UTC with trailing zeros trimmed', () => {
  assert.equal(rfc3339Nano(1_764_038_000_123_456_789n), '2025-11-25T02:33:20.123456789Z');
  assert.equal(rfc3339Nano(1_764_038_000_120_000_000n), '2025-11-25T02:33:20.12Z');
  assert.equal(rfc3339Nano(1_764_038_000_000_000_000n), '2025-11-25T02:33:20Z');
});

test('lines, partial writes and streams are recorded in the kubelet format', () => withDir(async (dir) => {
  const path = join(dir, 'sub', 'c', '0.log'); // the directory is created
  const w = await CriLogWriter.open(path);
  w.write('stdout', Buffer.from('hello\nwor'));
  w.write('stderr', Buffer.from('oops\r\n'));
  w.write('stdout', Buffer.from('ld\n\nlast'));
  await w.close();
  const recs = parse(await readFile(path, 'utf8'));
  assert.deepEqual(recs.map((r) => [r.stream, r.tag, r.text]), [
    ['stdout', 'F', 'hello'],
    ['stderr', 'F', 'oops'],
    ['stdout', 'F', 'world'],
    ['stdout', 'F', ''],
    ['stdout', 'F', 'last'],
  ]);
  for (const r of recs) assert.ok(!Number.isNaN(Date.parse(r.ts)) && r.ts.endsWith('Z'));
}));

test('lines longer than the limit are split into P records, the last piece is F', () => withDir(async (dir) => {
  const path = join(dir, '0.log');
  const w = await CriLogWriter.open(path, { maxLine: 16 * 1024 });
  const long = 'x'.repeat(16 * 1024 * 2 + 100);
  // Written in odd-sized pieces to exercise carry-over between writes.
  for (let i = 0; i < long.length; i += 1000) w.write('stdout', Buffer.from(long.slice(i, i + 1000)));
  w.write('stdout', Buffer.from('\n' + 'y'.repeat(16 * 1024) + '\n'));
  await w.close();
  const recs = parse(await readFile(path, 'utf8'));
  assert.deepEqual(recs.map((r) => [r.tag, r.text.length]), [['P', 16384], ['P', 16384], ['F', 100], ['F', 16384]]);
  assert.equal(recs.slice(0, 3).map((r) => r.text).join(''), long);
}));

test('reopen after a rename loses no line and splits none', () => withDir(async (dir) => {
  const path = join(dir, '0.log');
  const w = await CriLogWriter.open(path);
  const sent: string[] = [];
  let n = 0;
  const burst = (k: number) => {
    for (let i = 0; i < k; i++) {
      const line = `line ${n++}`;
      sent.push(line);
      // Half a line now, half later: a reopen in between must not cut it.
      w.write('stdout', Buffer.from(line.slice(0, 3)));
      w.write('stdout', Buffer.from(line.slice(3) + '\n'));
    }
  };
  burst(50);
  await rename(path, join(dir, '0.log.1'));
  const reopened = w.reopen();
  burst(50); // arrives while the reopen is under way
  await reopened;
  burst(50);
  await w.close();
  const first = parse(await readFile(join(dir, '0.log.1'), 'utf8')).map((r) => r.text);
  const second = parse(await readFile(path, 'utf8')).map((r) => r.text);
  assert.ok(first.length > 0 && second.length > 0);
  assert.deepEqual([...first, ...second], sent);
}));
