import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { VolumeEntry } from '../../src/agent-protocol/types.js';
import { isPodvisorError } from '../../src/errors.js';
import { COPY_LIMITS } from '../../src/volume/host-tree.js';
import { checkFetched, planWriteBack } from '../../src/volume/write-back-plan.js';

// What the host accepts of a guest's answer about a writable copied volume, before anything is written
// (the end-to-end side, with a real VM and a guest that lies: test/security/copy-writeback.test.ts).

const root: VolumeEntry = { path: '', kind: 'dir', mode: 0o755, stamp: 'r' };
const file = (path: string, size: number, data?: Buffer): VolumeEntry => ({ path, kind: 'file', mode: 0o644, stamp: `1:1:${size}:1`, ...(data ? { data } : {}) });
const none = () => ({ stamps: new Map<string, string>(), sizes: new Map<string, number>() });

function refused(entries: VolumeEntry[], code: 'INTERNAL' | 'RESOURCE_EXHAUSTED', pattern: RegExp, last = none()): void {
  assert.throws(() => planWriteBack('/vol', entries, last), (e) => isPodvisorError(e, code) && pattern.test(e.message));
}

test('a well-formed answer: new directories and files, inline data or fetched by path, links kept but never written', () => {
  const plan = planWriteBack('/vol', [root, { path: 'd', kind: 'dir', mode: 0o755, stamp: 'd' }, file('d/a', 2, Buffer.from('hi')), file('d/b', 5), { path: 'l', kind: 'symlink', mode: 0o777, data: Buffer.from('/etc'), stamp: 'l' }], none());
  assert.deepEqual(plan.dirs.map((e) => e.path), ['', 'd']);
  assert.deepEqual(plan.files.map((e) => e.path), ['d/a']);
  assert.deepEqual(plan.fetch, [{ path: 'd/b', size: 5 }]);
  assert.deepEqual([...plan.next.keys()], ['', 'd', 'd/a', 'd/b', 'l']);
  assert.equal(plan.heldBytes, 7);
});

test('paths outside the volume, NULs, odd kinds, long names, missing parents and repeats are protocol errors', () => {
  for (const [bad, why] of [
    [[file('../x', 1)], /not a plain relative path/],
    [[file('/etc/passwd', 1)], /not a plain relative path/],
    [[file('a\0b', 1)], /NUL byte/],
    [[{ ...file('dev', 0), kind: 'chardev' as VolumeEntry['kind'] }], /has kind/],
    [[file('n'.repeat(256), 1)], /name longer than 255/],
    [[file(`${'a/'.repeat(2050)}f`, 1)], /longer than 4096 bytes/],
    [[file('no/parent', 1)], /no directory listed as its parent/],
    [[file('x', 1), file('x', 1)], /listed twice/],
    [[{ ...file('x', 1), stamp: 'garbage' }], /no size in its stamp/],
  ] as Array<[VolumeEntry[], RegExp]>) refused([root, ...bad], 'INTERNAL', why);
});

test('the entry, file and volume bounds hold, counting the larger of old and new while a file changes', () => {
  refused([root, ...Array.from({ length: COPY_LIMITS.entries + 1 }, (_, i) => file(`f${i}`, 0))], 'RESOURCE_EXHAUSTED', /entries, more than/);
  refused([root, file('big', COPY_LIMITS.fileBytes + 1)], 'RESOURCE_EXHAUSTED', /a copied volume file may have/);
  const files = Math.floor(COPY_LIMITS.volumeBytes / COPY_LIMITS.fileBytes); // a volume just within the bound
  const full = Array.from({ length: files }, (_, i) => file(`f${i}`, COPY_LIMITS.fileBytes));
  planWriteBack('/vol', [root, ...full], none());
  refused([root, ...full, file('one-more', COPY_LIMITS.fileBytes)], 'RESOURCE_EXHAUSTED', /a copied volume may hold/);
  // Every file shrinks to 1 byte and a new one comes: until they are rewritten the host holds their old sizes too.
  const last = { stamps: new Map(full.map((e) => [e.path, 'old'])), sizes: new Map(full.map((e) => [e.path, COPY_LIMITS.fileBytes])) };
  refused([root, ...full.map((e) => file(e.path, 1)), file('new', COPY_LIMITS.fileBytes)], 'RESOURCE_EXHAUSTED', /a copied volume may hold/, last);
  // Unchanged files count at the size the host wrote, not what a stamp claims now.
  const same = { stamps: new Map(full.map((e) => [e.path, e.stamp!])), sizes: new Map(full.map((e) => [e.path, COPY_LIMITS.fileBytes])) };
  assert.equal(planWriteBack('/vol', [root, ...full.map((e) => ({ ...e }))], same).heldBytes, files * COPY_LIMITS.fileBytes);
});

test('a by-path read answers only what was asked, files only, within the file bound', () => {
  assert.throws(() => checkFetched('/vol', new Set(['a']), [file('b', 1, Buffer.from('x'))]), /not asked for/);
  assert.throws(() => checkFetched('/vol', new Set(['a']), [file('a', 1, Buffer.from('x')), file('a', 1, Buffer.from('x'))]), /not asked for/);
  assert.throws(() => checkFetched('/vol', new Set(['a']), [{ ...file('a', 0), kind: 'dir' }]), /as kind/);
  assert.throws(() => checkFetched('/vol', new Set(['a']), [file('a', 1, Buffer.alloc(COPY_LIMITS.fileBytes + 1))]), /a copied volume file may have/);
});
