import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PodIndex, containerNameKey, sandboxNameKey } from '../../src/pod/pod-index.js';
import { newId, resolveIdPrefix } from '../../src/pod/ids.js';
import { assertContainerMove, canMoveContainer, canMoveSandbox } from '../../src/pod/state-machine.js';
import { filterContainers, filterSandboxes } from '../../src/pod/filters.js';
import { isPodvisorError } from '../../src/errors.js';
import { sampleContainer, sampleSandbox, sandboxConfig } from '../helpers/pod-records.js';

test('ids are 64 lowercase hex digits and distinct', () => {
  const a = newId(), b = newId();
  assert.match(a, /^[0-9a-f]{64}$/);
  assert.notEqual(a, b);
});

test('an id prefix resolves when unique, a full id always wins, an ambiguous prefix is an error', () => {
  const ids = ['abc123' + '0'.repeat(58), 'abd999' + '0'.repeat(58), 'ab'];
  assert.equal(resolveIdPrefix('abc', ids, 'sandbox'), ids[0]);
  assert.equal(resolveIdPrefix('ab', ids, 'sandbox'), 'ab');
  assert.equal(resolveIdPrefix('ffff', ids, 'sandbox'), undefined);
  assert.equal(resolveIdPrefix('not-hex', ids, 'sandbox'), undefined);
  assert.throws(() => resolveIdPrefix('ab', ids.slice(0, 2), 'sandbox'), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
  assert.throws(() => resolveIdPrefix('', ids, 'sandbox'), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
});

test('a sandbox name is reserved once per (name, namespace, uid, attempt)', () => {
  const index = new PodIndex();
  const m = sandboxConfig().metadata;
  index.reserveName(sandboxNameKey(m), 'id-1', 'sandbox');
  index.reserveName(sandboxNameKey(m), 'id-1', 'sandbox'); // the owner may re-reserve
  assert.throws(() => index.reserveName(sandboxNameKey(m), 'id-2', 'sandbox'),
    (e) => isPodvisorError(e, 'ALREADY_EXISTS') && /id-1/.test(e.message));
  index.reserveName(sandboxNameKey({ ...m, attempt: 1 }), 'id-2', 'sandbox');
  index.releaseName(sandboxNameKey(m), 'id-2'); // not the owner: no effect
  assert.throws(() => index.reserveName(sandboxNameKey(m), 'id-3', 'sandbox'));
  index.releaseName(sandboxNameKey(m), 'id-1');
  index.reserveName(sandboxNameKey(m), 'id-3', 'sandbox');
});

test('container names are per sandbox', () => {
  const index = new PodIndex();
  index.reserveName(containerNameKey('s1', { name: 'app', attempt: 0 }), 'c1', 'container');
  index.reserveName(containerNameKey('s2', { name: 'app', attempt: 0 }), 'c2', 'container');
  assert.throws(() => index.reserveName(containerNameKey('s1', { name: 'app', attempt: 0 }), 'c3', 'container'),
    (e) => isPodvisorError(e, 'ALREADY_EXISTS'));
});

test('lookups by id prefix, NotFound for unknown ids', () => {
  const index = new PodIndex();
  const s = sampleSandbox();
  const c = sampleContainer(s.id, 'app');
  index.addSandbox(s);
  index.addContainer(c);
  assert.equal(index.sandbox(s.id.slice(0, 12)), s);
  assert.equal(index.container(c.id.slice(0, 8)), c);
  assert.throws(() => index.sandbox('f'.repeat(64)), (e) => isPodvisorError(e, 'NOT_FOUND'));
  assert.equal(index.findContainer('0'.repeat(64)), undefined);
  assert.deepEqual(index.containersOf(s.id), [c]);
});

test('container state moves: forward only', () => {
  assert.ok(canMoveContainer('created', 'running'));
  assert.ok(canMoveContainer('running', 'exited'));
  assert.ok(canMoveContainer('created', 'exited'));
  assert.ok(!canMoveContainer('exited', 'running'));
  assert.ok(!canMoveContainer('running', 'created'));
  assert.throws(() => assertContainerMove('c1', 'exited', 'running', 'start'),
    (e) => isPodvisorError(e, 'FAILED_PRECONDITION') && /EXITED/.test(e.message));
  assert.ok(canMoveSandbox('ready', 'notready'));
  assert.ok(!canMoveSandbox('notready', 'ready'));
});

test('list filters: id prefix, state, labels, sandbox id', () => {
  const index = new PodIndex();
  const a = sampleSandbox({ config: sandboxConfig({ labels: { app: 'a', tier: 'front' } }) });
  const b = sampleSandbox({ config: sandboxConfig({ labels: { app: 'b' } }), state: 'notready' });
  index.addSandbox(a);
  index.addSandbox(b);
  const ca = sampleContainer(a.id, 'one');
  const cb = sampleContainer(b.id, 'two', { state: 'running' });
  index.addContainer(ca);
  index.addContainer(cb);

  assert.deepEqual(filterSandboxes(index).map((s) => s.id), [a.id, b.id]);
  assert.deepEqual(filterSandboxes(index, { id: a.id.slice(0, 10) }), [a]);
  assert.deepEqual(filterSandboxes(index, { id: 'ffffffff' }), []);
  assert.deepEqual(filterSandboxes(index, { state: 'notready' }), [b]);
  assert.deepEqual(filterSandboxes(index, { labelSelector: { app: 'a', tier: 'front' } }), [a]);
  assert.deepEqual(filterSandboxes(index, { labelSelector: { app: 'a', tier: 'back' } }), []);

  assert.deepEqual(filterContainers(index, { podSandboxId: b.id.slice(0, 6) }), [cb]);
  assert.deepEqual(filterContainers(index, { state: 'created' }), [ca]);
  assert.deepEqual(filterContainers(index, { id: cb.id }), [cb]);
  assert.deepEqual(filterContainers(index, { labelSelector: { name: 'one' } }), [ca]);
  assert.deepEqual(filterContainers(index, { podSandboxId: 'nothing' }), []);
});
