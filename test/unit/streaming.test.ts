import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import zlib from 'node:zlib';
import { SPDY3_DICTIONARY } from '../../src/streaming/spdy/dictionary.js';
import { FrameReader, encodeControl, encodeData, type Frame } from '../../src/streaming/spdy/frames.js';
import { HeaderBlockReader, HeaderBlockWriter, encodeHeaderPairs } from '../../src/streaming/spdy/header-block.js';
import { SpdySession } from '../../src/streaming/spdy/session.js';
import { TokenStore } from '../../src/streaming/tokens.js';
import { IdleTimer } from '../../src/streaming/idle-timer.js';
import { OUTPUT_HIGH_WATER, OUTPUT_LOW_WATER, OutputFlow } from '../../src/streaming/output-flow.js';
import { exitCodeStatus } from '../../src/streaming/status.js';

describe('SPDY/3 pieces', () => {
  test('the dictionary is the 1423-byte SPDY/3 one', () => {
    assert.equal(SPDY3_DICTIONARY.length, 1423);
    assert.equal(SPDY3_DICTIONARY.subarray(0, 11).toString('latin1'), '\0\0\0\x07options');
    assert.ok(SPDY3_DICTIONARY.toString('latin1').endsWith(',enq=0.'));
  });

  test('frames survive any split of the byte stream; oversized frames are refused, not buffered', () => {
    const frames: Frame[] = [];
    const reader = new FrameReader((f) => frames.push(f), (m) => assert.fail(m));
    const bytes = Buffer.concat([encodeData(5, 1, Buffer.from('hello')), encodeControl(6, 0, Buffer.from([0, 0, 0, 9]))]);
    for (const b of bytes) reader.push(Buffer.from([b]));
    assert.deepEqual(frames[0], { kind: 'data', streamId: 5, flags: 1, data: Buffer.from('hello') });
    assert.equal(frames[1].kind, 'control');
    let error = '';
    const small = new FrameReader(() => assert.fail('no frame'), (m) => { error = m; }, 16);
    small.push(encodeData(1, 0, Buffer.alloc(17)).subarray(0, 8));
    assert.match(error, /over the 16-byte limit/);
  });

  test('frame payloads: a large one inside one read is a view of it, a small one is copied, one across reads is joined', () => {
    const frames: Frame[] = [];
    const reader = new FrameReader((f) => frames.push(f), (m) => assert.fail(m));
    const big = Buffer.alloc(60_000, 7);
    const read = Buffer.concat([encodeData(1, 0, big), encodeData(3, 0, Buffer.from('tiny')), encodeData(5, 1, Buffer.alloc(0))]);
    reader.push(read.subarray(0, read.length - 3));
    reader.push(read.subarray(read.length - 3));
    const [first, second, third] = frames as Array<Extract<Frame, { kind: 'data' }>>;
    assert.ok(first.data.equals(big));
    assert.equal(first.data.buffer, read.buffer, 'the large payload is not copied');
    assert.equal(second.data.toString(), 'tiny');
    assert.notEqual(second.data.buffer, read.buffer, 'a small payload does not pin the whole read');
    assert.deepEqual([third.streamId, third.flags, third.data.length], [5, 1, 0]);
  });

  test('header blocks: zlib with the dictionary in (as Go clients send), stored blocks out, one context per direction', async () => {
    const deflate = zlib.createDeflate({ dictionary: SPDY3_DICTIONARY });
    const compress = (h: Record<string, string>) => new Promise<Buffer>((resolve) => {
      const chunks: Buffer[] = [];
      const on = (c: Buffer) => chunks.push(c);
      deflate.on('data', on);
      deflate.write(encodeHeaderPairs(h));
      deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => { deflate.off('data', on); resolve(Buffer.concat(chunks)); });
    });
    const reader = new HeaderBlockReader();
    assert.deepEqual(reader.decode(await compress({ streamtype: 'error' })), new Map([['streamtype', ['error']]]));
    assert.deepEqual(reader.decode(await compress({ streamtype: 'data', port: '80', requestid: '0' })), new Map([['streamtype', ['data']], ['port', ['80']], ['requestid', ['0']]]));
    deflate.close();
    // What we write is a zlib stream any inflater reads, block by block.
    const writer = new HeaderBlockWriter();
    const back = new HeaderBlockReader();
    assert.deepEqual(back.decode(writer.encode({})), new Map());
    assert.deepEqual(back.decode(writer.encode({ a: ['1', '2'] })), new Map([['a', ['1', '2']]]));
  });

  test('a client and a server session: streams, data both ways, FIN, ping, reset', async () => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
    const clientSocket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    const serverSession = new SpdySession(await accepted, { server: true, maxStreams: 2 });
    const client = new SpdySession(clientSocket, { server: false });
    serverSession.on('stream', (s) => {
      s.on('data', (d) => s.write(Buffer.from(d.toString().toUpperCase())));
      s.on('end', () => s.end());
    });
    const stream = await client.openStream({ streamtype: 'stdout' });
    const chunks: Buffer[] = [];
    stream.on('data', (d) => chunks.push(d));
    const ended = new Promise<void>((r) => stream.once('end', () => r()));
    stream.end(Buffer.from('shout'));
    await ended;
    assert.equal(Buffer.concat(chunks).toString(), 'SHOUT');
    await client.ping();
    // Past maxStreams the server refuses with a reset.
    const keep = [await client.openStream({ n: '1' }), await client.openStream({ n: '2' })];
    await assert.rejects(client.openStream({ n: '3' }), /refused/);
    assert.equal(keep.length, 2);
    client.destroy('done');
    await new Promise<void>((r) => serverSession.whenClosed(() => r()));
    server.close();
  });
});

describe('output flow control', () => {
  test('pauses past the high-water mark, resumes below the low-water mark (watching the queue while paused), drops past the hard limit', async () => {
    let queued = 0;
    const calls: boolean[] = [];
    let tooSlow = 0;
    const flow = new OutputFlow(() => queued, async (p) => { calls.push(p); }, { label: 't', hardLimit: 16 << 20, onTooSlow: (q) => { tooSlow = q; } });
    queued = OUTPUT_HIGH_WATER;
    flow.check();
    assert.deepEqual(calls, [], 'at the mark: not yet');
    queued = OUTPUT_HIGH_WATER + 1;
    flow.check();
    flow.check();
    assert.deepEqual(calls, [true], 'one pause, not one per check');
    queued = OUTPUT_LOW_WATER; // read down, but the transport says nothing until it is empty
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(calls, [true], 'still above the low-water mark');
    queued = OUTPUT_LOW_WATER - 1;
    // The watch backs off while the queue does not move, to at most 200 ms between looks.
    for (let waited = 0; calls.length < 2 && waited < 1000; waited += 10) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(calls, [true, false], 'resumed by the watch before the queue emptied');
    queued = 17 << 20;
    flow.check();
    assert.equal(tooSlow, 17 << 20);
    queued = 0;
    flow.check();
    assert.deepEqual(calls, [true, false], 'nothing after the session was dropped');
  });
});

describe('idle timer', () => {
  test('fires once nothing happened for its time; a touch pushes it back; stop cancels it', async () => {
    let fired = 0;
    const started = Date.now();
    const timer = new IdleTimer(2000, () => { fired++; });
    await new Promise((r) => setTimeout(r, 200));
    timer.touch();
    const touchedAt = Date.now();
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(fired, 0, 'touched a second ago: not idle yet');
    for (let waited = 0; fired === 0 && waited < 5000; waited += 10) await new Promise((r) => setTimeout(r, 10));
    assert.equal(fired, 1);
    assert.ok(Date.now() - touchedAt >= 1990, `fired ${Date.now() - touchedAt} ms after the touch (${Date.now() - started} ms after the start)`);
    const stopped = new IdleTimer(20, () => { fired++; });
    stopped.stop();
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(fired, 1, 'a stopped timer never fires');
  });
});

describe('streaming tokens and status', () => {
  test('tokens are single use, expire after their TTL and are bounded in number', () => {
    let now = 0;
    const store = new TokenStore<string>(60_000, 3, () => now);
    const a = store.issue('a');
    assert.match(a, /^[A-Za-z0-9_-]{22}$/);
    assert.equal(store.take(a), 'a');
    assert.equal(store.take(a), undefined, 'reused');
    const b = store.issue('b');
    now = 60_000;
    assert.equal(store.take(b), undefined, 'expired');
    store.issue('c'); store.issue('d'); store.issue('e');
    assert.throws(() => store.issue('f'), /3 streaming requests are waiting/);
    now = 200_000;
    store.issue('g'); // expired ones no longer count
  });

  test('a non-zero exit is a NonZeroExitCode Status with an ExitCode cause', () => {
    const status = JSON.parse(exitCodeStatus(['sh', '-c', 'exit 3'], 3));
    assert.equal(status.status, 'Failure');
    assert.equal(status.reason, 'NonZeroExitCode');
    assert.deepEqual(status.details.causes, [{ reason: 'ExitCode', message: '3' }]);
  });
});
