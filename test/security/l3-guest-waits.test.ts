import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentClient } from '../../src/agent-client/client.js';
import { codec } from '../../src/agent-protocol/schema.js';
import { AgentAdapter } from '../../src/pod/agent-adapter.js';
import { waitFor } from '../helpers/wait.js';
import { HostileAgent } from './hostile-agent.js';

/**
 * L3 (security review 2026-12-01): ExecSync with timeout 0 waited only for an
 * exit event, so a channel that died never ended the call; WaitProcess had no
 * deadline at all. Now exec waits end with UNAVAILABLE when the channel is
 * gone for good, and every agent call has a deadline.
 */
test('L3: ExecSync without a timeout fails with UNAVAILABLE once the agent channel is gone', async () => {
  const execReply = codec<object>('ExecProcessResponse');
  let execs = 0;
  const agent = await new HostileAgent({ ExecProcess: async () => { execs++; return execReply.encode({ pid: 7 }); } }).listen();
  let client: AgentClient | undefined;
  try {
    // The deadline is also how long reconnecting to the closed agent goes on before the channel is gone for
    // good, so it cannot be huge; but it must cover the first connect on a loaded host, where 1 s did not.
    client = await AgentClient.connect(agent.socketPath, { deadlineMs: 10_000 });
    const adapter = new AgentAdapter(client);
    const exec = adapter.execSync({ containerId: 'c'.repeat(64), argv: ['sleep', 'inf'], timeoutMs: 0 });
    // The process is started (the agent answered ExecProcess): from here only an exit event would end the wait.
    await waitFor('ExecProcess to reach the agent', () => (execs > 0 ? true : undefined), 60_000, 20);
    await agent.close(); // the VM went away: no exit event will ever come, and no reconnect succeeds
    await assert.rejects(exec, { code: 'UNAVAILABLE' });
  } finally {
    client?.close();
    await agent.close(); // a failure before the close above must not leave the listener holding the test open
  }
});

test('L3: WaitProcess has a deadline', async () => {
  const agent = await new HostileAgent().listen(); // never answers WaitProcess
  let client: AgentClient | undefined;
  try {
    // Connecting is not what is tested: a deadline a loaded host cannot overrun.
    client = await AgentClient.connect(agent.socketPath, { deadlineMs: 60_000, callTimeoutMs: 300 });
    await assert.rejects(client.waitProcess({ containerId: 'c'.repeat(64), execId: '' }), { code: 'DEADLINE_EXCEEDED' });
    await assert.rejects(client.call('WaitProcess', { containerId: 'c'.repeat(64), execId: '' }, 0), { code: 'DEADLINE_EXCEEDED' });
  } finally {
    client?.close();
    await agent.close();
  }
});
