import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { waitFor } from '../helpers/wait.js';
import { podSetup, sleep } from './pod-setup.js';

/**
 * H3, CRI-log half (security review 2026-12-01): output events kept being
 * appended to the log of a container already reported EXITED, which kubelet
 * no longer rotates. The log is now complete and closed at EXITED.
 */
test('H3: nothing is appended to an EXITED container\'s log', async () => {
  const pods = await podSetup();
  try {
    const { record, guest } = await pods.sandbox();
    const c = await pods.runningContainer(record.id, 'job');
    guest.output(c.id, 'last words\n');
    guest.exit({ containerId: c.id, exitCode: 0, oomKilled: false });
    // Recording the exit closes the log and saves the record: disk work, done when it is done.
    await waitFor('the exit to be recorded', () => (c.state === 'exited' ? true : undefined), 60_000, 20);
    const before = (await stat(c.logFile)).size;
    assert.match(await readFile(c.logFile, 'utf8'), /last words\n$/);
    guest.output(c.id, Buffer.alloc(1 << 20, 0x41));
    guest.output(c.id, 'more\n');
    await sleep(200); // time for a wrong append to land: nothing may arrive however long we wait
    assert.equal((await stat(c.logFile)).size, before);
    assert.equal(pods.ctx.logWriters.has(c.id), false, 'the writer is closed');
  } finally {
    await pods.cleanup();
  }
});
