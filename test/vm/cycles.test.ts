import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { Vm } from '../../src/vm/vm.js';
import { guestProfile, qemuProcessesUsing, scratchRoot } from '../helpers/vm.js';

/**
 * 20 boot/stop cycles leave no QEMU process, socket or file. A boot is QEMU up and QMP
 * answering; the stop is the full path (QMP quit, wait for exit, clean-up, destroy).
 */

const root = scratchRoot('cycles');
after(() => root.remove());

it('20 boot/stop cycles leave nothing behind', async () => {
  const profile = guestProfile();
  const timings: number[] = [];
  for (let i = 0; i < 20; i++) {
    const runDir = join(root.dir, `vm${i}`);
    const t0 = performance.now();
    const vm = await Vm.launch({ id: `cycle-${i}`, profile, runDir });
    assert.equal(await vm.status(), 'running');
    const info = await vm.stop({ timeoutMs: 5000 });
    timings.push(performance.now() - t0);
    assert.equal(info.reason, 'stopped');
    assert.deepEqual(readdirSync(runDir).sort(), ['console.log', 'qemu.log'], `cycle ${i}: only the logs remain after stop`);
    await vm.destroy();
    assert.equal(existsSync(runDir), false, `cycle ${i}: destroy removes the run directory`);
    assert.deepEqual(qemuProcessesUsing(runDir), [], `cycle ${i}: no QEMU left`);
  }
  assert.deepEqual(readdirSync(root.dir), [], 'the scratch root is empty');
  assert.deepEqual(qemuProcessesUsing(root.dir), []);
  const sorted = [...timings].sort((a, b) => a - b);
  console.log(`# boot+stop cycle: median ${sorted[10].toFixed(0)} ms, max ${sorted[19].toFixed(0)} ms`);
});
