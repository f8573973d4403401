import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentClient } from '../../src/agent-client/client.js';
import { codec } from '../../src/agent-protocol/schema.js';
import { errorOf } from '../../src/ttrpc/status.js';
import { internal } from '../../src/errors.js';
import { HostileAgent } from './hostile-agent.js';

/**
 * L5 (security review 2026-12-01): a guest's status message (up to 4 MiB)
 * flowed whole into CRI errors and the daemon log, and a 4 MiB
 * ListContainers reply of empty entries decoded to ~128 MiB of heap. Guest
 * strings are now cut to 4 KiB and replies have per-method size limits.
 */
test('L5: a guest error message is cut before it becomes an error', () => {
  const err = errorOf({ code: 13, message: 'x'.repeat(4 << 20) }, 'agent Version');
  assert.ok(err.message.length < 5000, `message is ${err.message.length} characters`);
  assert.match(err.message, /more characters cut/);
});

test('L5: an oversized reply is refused before it is decoded', async () => {
  const n = (4 << 20) / 2 - 16;
  const huge = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) huge[2 * i] = 0x0a; // 2 M empty ContainerInfo entries
  const agent = await new HostileAgent({
    ListContainers: async () => huge,
    Version: async () => { throw internal('y'.repeat(1 << 20)); },
  }).listen();
  let client: AgentClient | undefined;
  try {
    // Connecting is not what is tested: a deadline a loaded host cannot overrun (3 s could be).
    client = await AgentClient.connect(agent.socketPath, { deadlineMs: 60_000 });
    const before = process.memoryUsage().heapUsed;
    await assert.rejects(client.listContainers(), (e: Error & { code?: string }) => e.code === 'INTERNAL' && /over the .*limit/.test(e.message));
    assert.ok(process.memoryUsage().heapUsed - before < 64 << 20);
    await assert.rejects(client.version(), (e: Error) => e.message.length < 5000);
    // A reply within its limit still decodes.
    assert.equal(codec<{ containers: unknown[] }>('ListContainersResponse').decode(huge.subarray(0, 20)).containers.length, 10);
  } finally {
    client?.close();
    await agent.close();
  }
});
