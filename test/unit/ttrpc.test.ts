import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isPodvisorError, notFound } from '../../src/errors.js';
import { TtrpcClient, TtrpcServer, encodeFrame, FrameDecoder, FrameType, MAX_MESSAGE_LENGTH, type Frame } from '../../src/ttrpc/index.js';
import { encodeRequest, decodeResponse } from '../../src/ttrpc/messages.js';

// A real unix socket between a TtrpcServer and TtrpcClient: the same code the
// host and guest use, minus the VM.
let dir: string;
let listener: net.Server;
const serverSockets = new Set<net.Socket>();
let foreverEnded = 0;

function connect(): Promise<{ client: TtrpcClient; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(join(dir, 'ttrpc.sock'), () => resolve({ client: new TtrpcClient(socket), socket }));
    socket.once('error', reject);
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'podvisor-ttrpc-'));
  const server = new TtrpcServer()
    .unary('test.Echo', 'Echo', async (payload) => payload)
    .unary('test.Echo', 'Missing', async () => { throw notFound('no such thing'); })
    .unary('test.Echo', 'Crash', async () => { throw new TypeError('boom'); })
    .unary('test.Echo', 'Slow', () => new Promise((resolve) => setTimeout(() => resolve(new Uint8Array([1])), 300)))
    .stream('test.Echo', 'Count', async (payload, stream) => {
      for (let i = 0; i < payload[0]; i++) stream.send(new Uint8Array([i]));
    })
    .stream('test.Echo', 'Forever', async (_payload, stream) => {
      stream.send(new Uint8Array([1]));
      await stream.whenClosed;
      foreverEnded++;
    });
  listener = net.createServer((socket) => {
    serverSockets.add(socket);
    socket.on('close', () => serverSockets.delete(socket));
    void server.serve(socket);
  });
  await new Promise<void>((resolve) => listener.listen(join(dir, 'ttrpc.sock'), resolve));
});

after(async () => {
  for (const s of serverSockets) s.destroy();
  await new Promise((resolve) => listener.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

test('frame header is length, stream id, type, flags (big endian)', () => {
  const frame = encodeFrame(7, FrameType.Data, 0x5, Buffer.from('abc'));
  assert.deepEqual([...frame.subarray(0, 10)], [0, 0, 0, 3, 0, 0, 0, 7, 3, 5]);
  assert.equal(frame.subarray(10).toString(), 'abc');
});

test('decoder reassembles frames split at every byte and reports oversized ones without buffering them', () => {
  const frames: Frame[] = [];
  const oversized: number[] = [];
  const decoder = new FrameDecoder((f) => frames.push(f), (o) => oversized.push(o.length), 16);
  const big = Buffer.alloc(40, 0xaa);
  const bytes = Buffer.concat([encodeFrame(1, 1, 0, Buffer.from('hello')), encodeFrame(3, 1, 0, big), encodeFrame(5, 3, 1, Buffer.from('x'))]);
  for (let i = 0; i < bytes.length; i++) decoder.push(bytes.subarray(i, i + 1));
  assert.deepEqual(frames.map((f) => [f.streamId, f.type, f.flags, f.payload.toString('latin1')]), [[1, 1, 0, 'hello'], [5, 3, 1, 'x']]);
  assert.deepEqual(oversized, [40]);
});

test('unary call round trip, typed errors cross the channel', async () => {
  const { client } = await connect();
  const reply = await client.call('test.Echo', 'Echo', Buffer.from('ping'));
  assert.equal(Buffer.from(reply).toString(), 'ping');
  await assert.rejects(client.call('test.Echo', 'Missing', new Uint8Array()), (e) => isPodvisorError(e, 'NOT_FOUND') && /no such thing/.test(e.message));
  await assert.rejects(client.call('test.Echo', 'Crash', new Uint8Array()), (e) => isPodvisorError(e, 'INTERNAL') && /boom/.test(e.message));
  await assert.rejects(client.call('test.Nope', 'Echo', new Uint8Array()), (e) => isPodvisorError(e, 'UNIMPLEMENTED') && /test\.Nope\/Echo/.test(e.message));
  client.close();
});

test('concurrent calls are multiplexed and answered by stream id', async () => {
  const { client } = await connect();
  const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => client.call('test.Echo', 'Echo', Buffer.from(`m${i}`))));
  assert.deepEqual(answers.map((a) => Buffer.from(a).toString()), Array.from({ length: 50 }, (_, i) => `m${i}`));
  client.close();
});

test('server streaming delivers every data frame then settles', async () => {
  const { client } = await connect();
  const got: number[] = [];
  await client.stream('test.Echo', 'Count', new Uint8Array([5]), (p) => got.push(p[0]));
  assert.deepEqual(got, [0, 1, 2, 3, 4]);
  client.close();
});

test('a call past its deadline fails with DEADLINE_EXCEEDED and the connection stays usable', async () => {
  const { client } = await connect();
  await assert.rejects(client.call('test.Echo', 'Slow', new Uint8Array(), { timeoutMs: 20 }), (e) => isPodvisorError(e, 'DEADLINE_EXCEEDED'));
  assert.equal(Buffer.from(await client.call('test.Echo', 'Echo', Buffer.from('ok'))).toString(), 'ok');
  client.close();
});

test('oversized request gets RESOURCE_EXHAUSTED and the next call still works', async () => {
  const { client } = await connect();
  await assert.rejects(client.call('test.Echo', 'Echo', Buffer.alloc(MAX_MESSAGE_LENGTH + 1)), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
  // Bypass the client's own check: a raw frame over the limit.
  const id = client.reserveStreamId();
  const reply = client.awaitReply(id, 'raw');
  // encodeFrame writes any length: the limit is the receiver's to enforce.
  client.writeRaw(encodeFrame(id, FrameType.Request, 0, Buffer.alloc(MAX_MESSAGE_LENGTH + 100, 7)));
  await assert.rejects(reply, (e) => isPodvisorError(e, 'RESOURCE_EXHAUSTED'));
  assert.equal(Buffer.from(await client.call('test.Echo', 'Echo', Buffer.from('after'))).toString(), 'after');
  client.close();
});

test('garbage request bytes and reused stream ids get error replies, not a crash', async () => {
  const { client } = await connect();
  const id = client.reserveStreamId();
  const reply = client.awaitReply(id, 'garbage');
  client.writeRaw(encodeFrame(id, FrameType.Request, 0, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])));
  await assert.rejects(reply, (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /malformed/.test(e.message));
  const even = client.awaitReply(2, 'even');
  client.writeRaw(encodeFrame(2, FrameType.Request, 0, encodeRequest({ service: 'test.Echo', method: 'Echo' })));
  await assert.rejects(even, (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
  client.writeRaw(encodeFrame(9999, 77, 0, Buffer.from('unknown type')));
  assert.equal(Buffer.from(await client.call('test.Echo', 'Echo', Buffer.from('alive'))).toString(), 'alive');
  client.close();
});

test('closing the connection fails pending calls with UNAVAILABLE', async () => {
  const { client, socket } = await connect();
  const pending = client.call('test.Echo', 'Slow', new Uint8Array());
  const closed = new Promise((resolve) => client.once('close', resolve));
  socket.destroy();
  await assert.rejects(pending, (e) => isPodvisorError(e, 'UNAVAILABLE'));
  await closed;
  assert.equal(client.closed, true);
  await assert.rejects(client.call('test.Echo', 'Echo', new Uint8Array()), (e) => isPodvisorError(e, 'UNAVAILABLE'));
});

test('response envelope decodes status and payload', () => {
  assert.deepEqual(decodeResponse(new Uint8Array()), { status: undefined, payload: new Uint8Array() });
});

test('a new client session on the same byte stream ends the old session and reuses no stream id', async () => {
  const { socket } = await connect();
  const ids = { next: 1 };
  const a = new TtrpcClient(socket, { session: 'host-connection-1', streamIds: ids });
  let got = 0;
  void a.stream('test.Echo', 'Forever', new Uint8Array(), () => { got++; }).catch(() => undefined);
  while (got === 0) await new Promise((r) => setTimeout(r, 5));
  const before = foreverEnded;
  // What a reconnecting host looks like to a guest that never saw the EOF.
  const b = new TtrpcClient(socket, { session: 'host-connection-2', streamIds: ids });
  assert.equal(Buffer.from(await b.call('test.Echo', 'Echo', Buffer.from('new session'))).toString(), 'new session');
  while (foreverEnded === before) await new Promise((r) => setTimeout(r, 5));
  assert.equal(ids.next, 5, 'the second session continued the stream ids');
  socket.destroy();
});

