import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageRecords, type ImageRecord } from '../../src/image/image-records.js';

const dir = mkdtempSync(join(tmpdir(), 'podvisor-records-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const record = (n: number): ImageRecord => ({
  id: `sha256:${String(n).padStart(64, '0')}`, repoTags: [`example.com/img:${n}`], repoDigests: [], manifestDigest: `sha256:${'1'.repeat(64)}`,
  layers: [], diffIds: [], blobs: [], size: n, createdAt: new Date(0).toISOString(),
});

test('two writers on one table (as daemon and CLI) lose no update', async () => {
  const file = join(dir, 'images.json');
  const a = new ImageRecords(file);
  const b = new ImageRecords(file);
  await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).update((m) => { m.set(record(i).id, record(i)); })));
  const fresh = new ImageRecords(file);
  await fresh.refresh();
  assert.equal(fresh.all().length, 20);
  assert.ok(!existsSync(`${file}.lock`), 'the lock is released');
});

test('a lock left by a dead process is taken over', async () => {
  const file = join(dir, 'stale.json');
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
  writeFileSync(`${file}.lock`, dead);
  const r = new ImageRecords(file);
  await r.update((m) => { m.set(record(1).id, record(1)); });
  assert.equal(r.all().length, 1);
  assert.ok(!existsSync(`${file}.lock`));
});
