import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cancelled, deadlineExceeded, isPodvisorError } from '../../src/errors.js';
import { LaunchSlots } from '../../src/pod/launch-slots.js';

/** A promise with its resolve exposed, to hold a fake "boot" open until the test says so. */
function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('LaunchSlots (bounded parallel VM boots)', () => {
  it('runs at most `limit` at once and starts the waiters first come, first served', async () => {
    const slots = new LaunchSlots(2);
    let peak = 0;
    const order: number[] = [];
    const gates = Array.from({ length: 5 }, gate);
    const runs = gates.map((g, i) => slots.run(async () => {
      order.push(i);
      peak = Math.max(peak, slots.active);
      await g.promise;
      return i;
    }));
    await tick();
    assert.equal(slots.active, 2);
    assert.equal(slots.waiting, 3);
    assert.deepEqual(order, [0, 1]);
    gates[1]!.open();
    await tick();
    assert.deepEqual(order, [0, 1, 2]);
    for (const g of gates) g.open();
    assert.deepEqual(await Promise.all(runs), [0, 1, 2, 3, 4]);
    assert.equal(peak, 2);
    assert.equal(slots.active, 0);
    assert.equal(slots.waiting, 0);
  });

  it('frees the slot when the work fails', async () => {
    const slots = new LaunchSlots(1);
    await assert.rejects(slots.run(async () => {
      throw new Error('boot failed');
    }), /boot failed/);
    assert.equal(slots.active, 0);
    assert.equal(await slots.run(async () => 'next'), 'next');
  });

  it('a waiter whose caller gives up leaves the queue with the caller\'s error and takes no slot', async () => {
    const slots = new LaunchSlots(1);
    const g = gate();
    const holder = slots.run(() => g.promise);
    const ac = new AbortController();
    const waiter = slots.acquire(ac.signal);
    const behind = slots.acquire();
    await tick();
    assert.equal(slots.waiting, 2);
    ac.abort(deadlineExceeded('deadline passed'));
    await assert.rejects(waiter, (e) => isPodvisorError(e, 'DEADLINE_EXCEEDED'));
    assert.equal(slots.waiting, 1);
    g.open();
    await holder;
    const release = await behind;
    assert.equal(slots.active, 1);
    release();
    release(); // twice is harmless
    assert.equal(slots.active, 0);
  });

  it('refuses at once when the caller already gave up, and says CANCELLED for a plain abort', async () => {
    const slots = new LaunchSlots(1);
    const gone = new AbortController();
    gone.abort(cancelled('client went away'));
    await assert.rejects(slots.acquire(gone.signal), (e) => isPodvisorError(e, 'CANCELLED'));
    const plain = new AbortController();
    const g = gate();
    const holder = slots.run(() => g.promise);
    const waiter = slots.acquire(plain.signal);
    plain.abort();
    await assert.rejects(waiter, (e) => isPodvisorError(e, 'CANCELLED'));
    g.open();
    await holder;
    assert.equal(slots.active, 0);
  });

  it('rejects a limit below 1', () => {
    assert.throws(() => new LaunchSlots(0), RangeError);
    assert.throws(() => new LaunchSlots(1.5), RangeError);
  });
});
