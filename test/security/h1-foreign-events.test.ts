import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { podSetup, sleep } from './pod-setup.js';

/**
 * H1 (security review 2026-12-01): sandbox A's agent could write into
 * sandbox B's CRI log and mark B's containers EXITED/OOMKilled by naming B's
 * container id. Events are now bound to the sandbox whose channel carried
 * them: others are dropped and counted.
 */
test('H1: events naming another sandbox\'s container are dropped and counted', async () => {
  const pods = await podSetup();
  try {
    const a = await pods.sandbox();
    const b = await pods.sandbox();
    const victim = await pods.runningContainer(b.record.id, 'web');
    a.guest.output(victim.id, 'written by pod A\n');
    a.guest.exit({ containerId: victim.id, exitCode: 137, oomKilled: true });
    // A prefix of the id is not the id either.
    a.guest.exit({ containerId: victim.id.slice(0, 12), exitCode: 1, oomKilled: false });
    b.guest.output(victim.id, 'written by pod B\n');
    await sleep(100);
    await pods.ctx.logWriters.get(victim.id)!.flush();
    const log = await readFile(victim.logFile, 'utf8');
    assert.doesNotMatch(log, /pod A/);
    assert.match(log, / stdout F written by pod B\n$/);
    assert.equal(victim.state, 'running');
    assert.equal(pods.ctx.foreignEvents.get(a.record.id), 3);
    assert.equal(pods.ctx.foreignEvents.get(b.record.id), undefined);
  } finally {
    await pods.cleanup();
  }
});
