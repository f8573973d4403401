import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../helpers/wait.js';
import { podSetup, sleep } from './pod-setup.js';

/**
 * L4 (security review 2026-12-01): Node takes a timer delay above 2^31-1 ms as
 * 1 ms, so StopContainer with a timeout of 2 147 484 s sent SIGKILL at once.
 * Delays are clamped to the longest a timer can wait.
 */
test('L4: a huge StopContainer timeout still sends the stop signal and waits', async () => {
  const pods = await podSetup();
  try {
    const { record, guest } = await pods.sandbox();
    const c = await pods.runningContainer(record.id, 'app');
    let warned = false;
    const onWarning = (w: Error) => { if (w.name === 'TimeoutOverflowWarning') warned = true; };
    process.on('warning', onWarning);
    const stopping = pods.containers.stop(c.id, 2_147_484);
    await waitFor('the stop signal', () => (guest.signals.length > 0 ? true : undefined), 60_000, 20);
    // With the overflow, SIGKILL followed 1 ms after the stop signal: give it time to show, then there must be none.
    await sleep(300);
    assert.deepEqual(guest.signals.map(([, s]) => s), [15], 'the stop signal, and no SIGKILL yet');
    guest.exit({ containerId: c.id, exitCode: 143, oomKilled: false });
    await stopping;
    process.off('warning', onWarning);
    assert.equal(warned, false);
    assert.equal(c.exitCode, 143);
  } finally {
    await pods.cleanup();
  }
});
