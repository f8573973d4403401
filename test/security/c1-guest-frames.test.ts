import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { AgentClient } from '../../src/agent-client/client.js';
import { encodeFrame, FrameType, FrameFlag } from '../../src/ttrpc/index.js';
import { waitFor } from '../helpers/wait.js';
import { HostileAgent, watchForCrashes } from './hostile-agent.js';

/**
 * C1 (security review 2026-12-01): an undecodable event from the guest threw
 * out of the agent socket's 'data' listener and killed podvisord. Now a
 * malformed frame or event is a protocol error: that channel closes for good
 * (no reconnect loop), it is reported once, and the process lives on.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('C1: an undecodable event closes that agent channel for good and throws nothing', async () => {
  const agent = await new HostileAgent().listen();
  const watch = watchForCrashes();
  try {
    const client = await AgentClient.connect(agent.socketPath, { deadlineMs: 60_000 }); // connecting is not what is tested
    const protocolErrors: string[] = [];
    client.on('protocolError', (r) => protocolErrors.push(r));
    const stream = await agent.subscribed();
    stream.send(Buffer.from([0xff, 0xff, 0xff])); // invalid wire type: protobufjs throws on it
    // However long the frame takes to arrive and be read, the channel ends up closed with the error reported.
    await waitFor('the protocol error to close the channel', () => (protocolErrors.length > 0 && !client.connected) || undefined, 60_000, 20);
    assert.deepEqual(watch.crashes, []);
    assert.equal(protocolErrors.length, 1, 'reported once');
    assert.ok(client.protocolFailure);
    assert.equal(client.connected, false);
    await sleep(300);
    assert.equal(agent.connects, 1, 'a guest that broke the protocol is not reconnected to');
    await assert.rejects(client.version(), { code: 'UNAVAILABLE' });
    client.close();
  } finally {
    watch.stop();
    await agent.close();
  }
});

/**
 * C1 fuzz: random and truncated frames, and random or truncated event
 * payloads, against the host's ttRPC client and event decoder. A fixed number
 * of rounds (each of the four kinds 15 times), not a time window: how many
 * rounds fit in a few seconds depends on the machine. The rule is only that
 * nothing throws out of a listener.
 */
test('C1 fuzz: random and truncated frames and events never crash the host', async () => {
  const agent = await new HostileAgent().listen();
  const watch = watchForCrashes();
  const good = Buffer.from(encodeFrame(1, FrameType.Data, 0, Buffer.from([0x0a, 0x04, 0x0a, 0x02, 0x61, 0x62, 0x78, 0x01])));
  const ROUNDS = 60;
  let rounds = 0;
  try {
    while (rounds < ROUNDS) {
      rounds++;
      const client = await AgentClient.connect(agent.socketPath, { deadlineMs: 60_000, callTimeoutMs: 200 });
      client.on('output', () => undefined);
      const stream = await agent.subscribed(rounds);
      const conn = agent.connections[agent.connections.length - 1]!;
      switch (rounds % 4) {
        case 0: // random event payloads on the real stream
          for (let i = 0; i < 20; i++) stream.send(randomBytes(1 + Math.floor(Math.random() * 64)));
          break;
        case 1: // a valid event cut short
          stream.send(good.subarray(10, 10 + 1 + Math.floor(Math.random() * 7)));
          break;
        case 2: // random frames: random header fields (responses and data on live and dead stream ids), random payloads
          for (let i = 0; i < 20; i++) {
            const type = [FrameType.Request, FrameType.Response, FrameType.Data, 7][i % 4]!;
            const flags = [0, FrameFlag.RemoteClosed, FrameFlag.NoData, 0xff][Math.floor(Math.random() * 4)]!;
            conn.write(encodeFrame(1 + 2 * Math.floor(Math.random() * 3), type, flags, randomBytes(Math.floor(Math.random() * 40))));
          }
          break;
        default: // raw random bytes, then a truncated header and a frame claiming to be huge
          conn.write(randomBytes(200));
          conn.write(encodeFrame(1, FrameType.Data, 0, randomBytes(8)).subarray(0, 5));
          conn.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 3, 0]));
      }
      await sleep(40);
      client.close();
    }
    await sleep(200);
    assert.deepEqual(watch.crashes, [], 'nothing may escape to the process');
  } finally {
    watch.stop();
    await agent.close();
  }
});
