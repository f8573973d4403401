import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deadlineExceeded, internal, resourceExhausted, unavailable } from '../../src/errors.js';
import { MAX_MESSAGE_CHARS, MAX_REFUSALS, WriteBackRefusals } from '../../src/volume/write-back-refusals.js';

describe('WriteBackRefusals (what copy mode refused of a guest, for the operator)', () => {
  const vol = (hostPath: string, ...containers: string[]) => ({ hostPath, containers });

  it('keeps the last few distinct refusals, counting repeats of the newest instead of adding them', () => {
    const r = new WriteBackRefusals();
    for (let i = 0; i < MAX_REFUSALS + 5; i++) r.record(internal(`bad answer ${i}`), vol('/v/a', 'c1'));
    for (let i = 0; i < 100; i++) r.record(resourceExhausted('too big'), vol('/v/a', 'c1'));
    const recent = r.recent();
    assert.equal(r.total, MAX_REFUSALS + 105);
    assert.equal(recent.length, MAX_REFUSALS);
    assert.deepEqual(recent.at(-1), { ...recent.at(-1)!, code: 'RESOURCE_EXHAUSTED', message: 'too big', count: 100 });
    assert.equal(recent[0]!.message, 'bad answer 6', 'the oldest went first');
  });

  it('cuts messages and escapes control characters (a guest error status is quoted as it came)', () => {
    const r = new WriteBackRefusals();
    r.record(resourceExhausted(`agent WatchVolumes: \u001b]0;owned\u0007${'G'.repeat(10_000)}`));
    const [only] = r.recent();
    assert.ok(only!.message.length <= MAX_MESSAGE_CHARS + 10);
    assert.ok(!/[\u0000-\u001f\u007f-\u009f]/.test(only!.message), 'no control characters');
    assert.match(only!.message, /^agent WatchVolumes: \\u001b\]0;owned\\u0007G+… \(cut\)$/);
    assert.equal(only!.volume, undefined, 'the long poll as a whole names no volume');
  });

  it('keeps refusals and silences, not the channel\'s other failures', () => {
    const r = new WriteBackRefusals();
    assert.equal(r.record(deadlineExceeded('WatchVolumes: no answer within 32000 ms')), true);
    assert.equal(r.record(unavailable('the agent channel dropped')), false);
    assert.equal(r.record(new Error('plain')), false);
    assert.deepEqual(r.recent().map((x) => x.code), ['DEADLINE_EXCEEDED']);
  });

  it('a container sees its own volumes\' refusals and the long poll\'s', () => {
    const r = new WriteBackRefusals();
    r.record(internal('a'), vol('/v/a', 'c1'));
    r.record(internal('b'), vol('/v/b', 'c2'));
    r.record(internal('poll'));
    assert.deepEqual(r.recent('c1').map((x) => x.message), ['a', 'poll']);
    assert.deepEqual(r.recent('c2').map((x) => x.message), ['b', 'poll']);
    assert.equal(r.recent().length, 3);
  });
});
