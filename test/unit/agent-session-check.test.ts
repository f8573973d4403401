import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AgentClient } from '../../src/agent-client/client.js';
import { AGENT_SERVICE, codec } from '../../src/agent-protocol/schema.js';
import { TtrpcServer } from '../../src/ttrpc/index.js';
import { waitFor } from '../helpers/wait.js';

/**
 * AgentClient.portChanged: after the guest opens or closes its agent port the client checks
 * that its channel still reaches the agent start it subscribed to, and connects afresh only
 * when not. A ttRPC server on a unix socket plays the guest side (QEMU's chardev socket):
 * its `starts` is what Health answers, `silent` stops it answering (another process holds the
 * port), and it counts connections and event subscriptions.
 */
describe('AgentClient.portChanged (session check after a port change)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pv-session-'));
  const socketPath = join(dir, 'agent.sock');
  const guest = { starts: 1, silent: false, connects: 0, subscriptions: 0, healths: 0 };
  const sockets: net.Socket[] = [];
  let listener: net.Server;
  let client: AgentClient;
  const settle = (ms = 50) => new Promise((r) => setTimeout(r, ms));

  before(async () => {
    const health = codec<object>('HealthResponse');
    const server = new TtrpcServer()
      .unary(AGENT_SERVICE, 'Health', async () => {
        guest.healths++;
        if (guest.silent) return new Promise<Uint8Array>(() => undefined);
        return health.encode({ status: 'SERVING', uptimeSeconds: 1, agentPid: 1, starts: guest.starts });
      })
      .stream(AGENT_SERVICE, 'GetEvents', async (_p, stream) => {
        guest.subscriptions++;
        await stream.whenClosed;
      });
    listener = net.createServer((socket) => {
      guest.connects++;
      sockets.push(socket);
      socket.on('error', () => undefined);
      void server.serve(socket);
    });
    await new Promise<void>((r) => listener.listen(socketPath, r));
    client = await AgentClient.connect(socketPath, { deadlineMs: 30_000 });
    await settle();
  });

  after(async () => {
    client?.close();
    for (const s of sockets) s.destroy();
    await new Promise((r) => listener.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('the same agent answering: nothing changes, however many changes are reported at once', async () => {
    const healths = guest.healths;
    for (let i = 0; i < 50; i++) client.portChanged();
    await settle(300);
    assert.equal(guest.connects, 1, 'no reconnect');
    assert.equal(guest.subscriptions, 1);
    // One check, plus one for the changes that came during it: never one per report.
    assert.ok(guest.healths - healths <= 2, `${guest.healths - healths} Health calls for 50 reports`);
  });

  it('another agent start on the port: a new connection and a new event subscription', async () => {
    guest.starts = 2;
    client.portChanged();
    await waitFor('the second subscription', () => (guest.subscriptions === 2 ? true : undefined), 60_000, 20);
    assert.equal(guest.connects, 2);
    assert.equal((await client.health()).starts, 2);
  });

  it('no answer on the channel (another process holds the port): reconnects, and waits for an agent without spinning', async () => {
    guest.silent = true;
    const connects = guest.connects;
    client.portChanged();
    client.portChanged();
    await waitFor('a reconnect', () => (guest.connects > connects ? true : undefined), 60_000, 20);
    const healths = guest.healths;
    await settle(3000);
    // While nobody answers, the reconnect probes with doubling waits (up to 2 s): a handful of calls, not a loop.
    assert.ok(guest.healths - healths <= 6, `${guest.healths - healths} Health probes in 3 s`);
    assert.equal(guest.connects, connects + 1, 'one reconnect at a time');
    guest.silent = false;
    guest.starts = 3;
    await waitFor('the third subscription', () => (client.connected && guest.subscriptions === 3 ? true : undefined), 60_000, 20);
    assert.equal((await client.health()).starts, 3);
  });

  it('a closed client ignores port changes', async () => {
    const connects = guest.connects;
    const healths = guest.healths;
    client.close();
    client.portChanged();
    await settle(200);
    assert.equal(guest.connects, connects);
    assert.equal(guest.healths, healths);
  });
});
