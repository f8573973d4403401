import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile, mkdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StateStore } from '../../src/pod/state-store.js';
import { newId } from '../../src/pod/ids.js';
import { sampleContainer, sampleSandbox } from '../helpers/pod-records.js';

async function withStore(fn: (store: StateStore, root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'podvisor-store-'));
  try {
    const store = new StateStore(join(root, 'pods'));
    await store.init();
    await fn(store, root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

test('sandboxes and containers saved are loaded back as they were', () => withStore(async (store) => {
  const s = sampleSandbox();
  const c1 = sampleContainer(s.id, 'app');
  const c2 = sampleContainer(s.id, 'sidecar');
  await store.saveSandbox(s);
  await store.saveContainer(c1);
  await store.saveContainer(c2);
  c1.state = 'running';
  await store.saveContainer(c1);

  const { sandboxes, orphans } = await store.loadAll();
  assert.deepEqual(orphans, []);
  assert.equal(sandboxes.length, 1);
  assert.deepEqual(sandboxes[0]!.sandbox, s);
  const byId = new Map(sandboxes[0]!.containers.map((c) => [c.id, c]));
  assert.deepEqual(byId.get(c1.id), c1);
  assert.deepEqual(byId.get(c2.id), c2);
}));

test('records are private to root and no temp file is left after a write', () => withStore(async (store) => {
  const s = sampleSandbox();
  await store.saveSandbox(s);
  await store.saveSandbox({ ...s, state: 'notready' });
  const files = await readdir(store.sandboxDir(s.id));
  assert.deepEqual(files.sort(), ['containers', 'sandbox.json']);
  const mode = (await stat(join(store.sandboxDir(s.id), 'sandbox.json'))).mode & 0o777;
  assert.equal(mode, 0o600);
  assert.equal((await store.loadAll()).sandboxes[0]!.sandbox.state, 'notready');
}));

test('removing a container and a sandbox deletes their records', () => withStore(async (store) => {
  const s = sampleSandbox();
  const c = sampleContainer(s.id, 'app');
  await store.saveSandbox(s);
  await store.saveContainer(c);
  await store.removeContainer(s.id, c.id);
  assert.deepEqual((await store.loadAll()).sandboxes[0]!.containers, []);
  await store.removeSandbox(s.id);
  assert.deepEqual((await store.loadAll()).sandboxes, []);
  // Removing again is fine (idempotent RemovePodSandbox).
  await store.removeSandbox(s.id);
}));

test('a sandbox directory without a readable record is reported as an orphan', () => withStore(async (store) => {
  const torn = newId();
  await mkdir(store.sandboxDir(torn), { recursive: true });
  const broken = newId();
  await mkdir(store.sandboxDir(broken), { recursive: true });
  await writeFile(join(store.sandboxDir(broken), 'sandbox.json'), '{"id":');
  const { sandboxes, orphans } = await store.loadAll();
  assert.deepEqual(sandboxes, []);
  assert.deepEqual(orphans.sort(), [torn, broken].sort());
}));

test('loading a root that does not exist yet gives nothing', async () => {
  const store = new StateStore(join(tmpdir(), `podvisor-missing-${newId()}`));
  assert.deepEqual(await store.loadAll(), { sandboxes: [], orphans: [] });
});
