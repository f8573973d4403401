import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { AgentClient } from '../../src/agent-client/index.js';
import { Vm } from '../../src/vm/vm.js';
import { guestProfile, qemuProcessesUsing, scratchRoot } from '../helpers/vm.js';

/**
 * The VM-template primitives: a booted VM with its RAM in a shared tmpfs file is saved
 * (device state only, thanks to x-ignore-shared), and fresh QEMUs map that RAM privately,
 * load the state, and answer through the agent without booting.
 */

const root = scratchRoot('tpl');
const shm = mkdtempSync('/dev/shm/podvisor-vmtest-tpl-');
const ramFile = join(shm, 'template.ram');
const stateFile = join(root.dir, 'template.state');
const vms: Vm[] = [];

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('VM template primitives', () => {
  after(async () => {
    for (const vm of vms) if (vm.state === 'running') await vm.stop({ timeoutMs: 3000 }).catch(() => undefined);
    assert.deepEqual(qemuProcessesUsing(root.dir), []);
    root.remove();
    rmSync(shm, { recursive: true, force: true });
  });

  it('saves a booted VM and restores clones that answer through the agent', async () => {
    const template = await Vm.launch({
      id: 'tpl', runDir: join(root.dir, 'tpl'), placeholderNic: true,
      profile: guestProfile({ memory: { kind: 'file', memPath: ramFile, share: true } }),
    });
    vms.push(template);
    const agent = await AgentClient.connect(template.agentSocket, { deadlineMs: 120_000 });
    const before = await agent.health();
    agent.close();
    // Save only once the guest agent has seen the host leave, so clones start with a free channel.
    await until(() => readFileSync(template.paths.consoleLog, 'utf8').includes('host disconnected'), 30_000, 'agent saw the host disconnect');
    await template.saveState(stateFile);
    assert.equal(await template.status(), 'postmigrate');
    await template.stop({ timeoutMs: 5000 });
    const stateSize = statSync(stateFile).size;
    assert.ok(stateSize < 4 * 1024 * 1024, `device state only (${stateSize} bytes), RAM stays in the shared file`);
    const ramHash = await sha256(ramFile);

    for (const name of ['clone1', 'clone2']) {
      const t0 = performance.now();
      const clone = await Vm.launch({
        id: name, runDir: join(root.dir, name), restoreFrom: stateFile, placeholderNic: true,
        profile: guestProfile({ memory: { kind: 'file', memPath: ramFile, share: false } }),
      });
      vms.push(clone);
      assert.equal(await clone.status(), 'running');
      assert.equal(clone.restoredFrom, stateFile);
      const restoredMs = performance.now() - t0;
      const cloneAgent = await AgentClient.connect(clone.agentSocket, { deadlineMs: 30_000 });
      const health = await cloneAgent.health();
      const answeredMs = performance.now() - t0;
      console.log(`# ${name}: running after ${restoredMs.toFixed(0)} ms, agent answered after ${answeredMs.toFixed(0)} ms (state ${stateSize} bytes)`);
      assert.equal(health.status, 'SERVING');
      assert.equal(health.agentPid, before.agentPid, 'the same agent process, not a fresh boot');
      assert.ok(health.uptimeSeconds >= before.uptimeSeconds, 'guest uptime continues from the template');
      cloneAgent.close();
      await clone.stop({ timeoutMs: 5000 });
    }
    assert.equal(await sha256(ramFile), ramHash, 'clones map the template RAM privately: the file is unchanged');
  });

  it('refuses a clone whose devices differ from the template (no NIC): QEMU ends, the launch fails and leaves nothing', async () => {
    const runDir = join(root.dir, 'mismatch');
    await assert.rejects(Vm.launch({
      id: 'mismatch', runDir, restoreFrom: stateFile,
      profile: guestProfile({ memory: { kind: 'file', memPath: ramFile, share: false } }),
    }), { code: 'FAILED_PRECONDITION' });
    assert.deepEqual(qemuProcessesUsing(runDir), []);
  });
});
