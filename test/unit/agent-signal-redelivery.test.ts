import { test } from 'node:test';
import assert from 'node:assert/strict';
import { redeliverOnceHandled, signalDisposition, type Disposition } from '../../agent/signal-redelivery.js';

const status = (cgt: string, ign: string) => `Name:\ttop\nSigQ:\t0/1840\nSigPnd:\t0000000000000000\nSigBlk:\t0000000000000000\nSigIgn:\t${ign}\nSigCgt:\t${cgt}\n`;

test('disposition from the SigCgt/SigIgn masks', () => {
  // 0x4000 is bit 14: signal 15 (SIGTERM).
  assert.equal(signalDisposition(1, 15, () => status('0000000000004000', '0000000000000000')), 'caught');
  assert.equal(signalDisposition(1, 15, () => status('0000000000000000', '0000000000004000')), 'ignored');
  assert.equal(signalDisposition(1, 15, () => status('0000000003807a27', '0000000000000000')), 'caught');
  assert.equal(signalDisposition(1, 2, () => status('0000000000004000', '0000000000000000')), 'default');
  assert.equal(signalDisposition(1, 15, () => { throw new Error('ENOENT'); }), 'gone');
});

test('the real /proc of this process: SIGUSR2 default, then caught once a handler exists', () => {
  const handler = () => undefined;
  assert.equal(signalDisposition(process.pid, 12), 'default'); // SIGUSR2 with no listener
  process.on('SIGUSR2', handler);
  try {
    assert.equal(signalDisposition(process.pid, 12), 'caught');
  } finally {
    process.off('SIGUSR2', handler);
  }
});

test('sends again once the handler appears; gives up for ignored or gone processes', async () => {
  const seq: Disposition[] = ['default', 'default', 'caught'];
  let sent = 0;
  const again = await redeliverOnceHandled(1, 15, async () => { sent++; }, { pollMs: 1, disposition: () => seq.shift() ?? 'caught' });
  assert.equal(again, true);
  assert.equal(sent, 1);
  assert.equal(await redeliverOnceHandled(1, 15, async () => { sent++; }, { pollMs: 1, disposition: () => 'ignored' }), false);
  assert.equal(await redeliverOnceHandled(1, 15, async () => { sent++; }, { pollMs: 1, disposition: () => 'gone' }), false);
  assert.equal(await redeliverOnceHandled(1, 15, async () => { sent++; }, { pollMs: 1, windowMs: 20, disposition: () => 'default' }), false);
  assert.equal(sent, 1);
});

test('keeps watching past the first seconds (a slow start under emulation) and stops once the process has ended', async () => {
  // The handler appears only after 60 polls; the old fixed 5 s window would have given up on a slow guest.
  let polls = 0;
  let sent = 0;
  assert.equal(await redeliverOnceHandled(1, 15, async () => { sent++; }, { pollMs: 1, maxPollMs: 1, disposition: () => (++polls > 60 ? 'caught' : 'default') }), true);
  assert.equal(sent, 1);
  // The container's exit ends the watch (its pid could be reused): nothing is sent.
  let exited!: () => void;
  const until = new Promise<void>((r) => { exited = r; });
  const watching = redeliverOnceHandled(1, 15, async () => { sent++; }, { until, pollMs: 1, maxPollMs: 1, disposition: () => 'default' });
  setTimeout(exited, 20);
  assert.equal(await watching, false);
  assert.equal(sent, 1);
});
