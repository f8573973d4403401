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
  const client = await AgentClient.connect(agent.socketPath, { deadlineMs: 1000 });
  const adapter = new AgentAdapter(client);
  try {
    const exec = adapter.execSync({ containerId: 'c'.repeat(64), argv: ['sleep', 'inf'], timeoutMs: 0 });
    // The process is started (the agent answered ExecProcess): from here only an exit event would end the wait.
    await waitFor('ExecProcess to reach the agent', () => (execs > 0 ? true : undefined), 60_000, 20);
    await agent.close(); // the VM went away: no exit event will ever come, and no reconnect succeeds
    await assert.rejects(exec, { code: 'UNAVAILABLE' });
  } finally {
    client.close();
  }
});

test('L3: WaitProcess has a deadline', async () => {
  const agent = await new HostileAgent().listen(); // never answers WaitProcess
  const client = await AgentClient.connect(agent.socketPath, { deadlineMs: 1000, callTimeoutMs: 300 });
  try {
    await assert.rejects(client.waitProcess({ containerId: 'c'.repeat(64), execId: '' }), { code: 'DEADLINE_EXCEEDED' });
    await assert.rejects(client.call('WaitProcess', { containerId: 'c'.repeat(64), execId: '' }, 0), { code: 'DEADLINE_EXCEEDED' });
  } finally {
    client.close();
    await agent.close();
  }
});
