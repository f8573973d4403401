import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { QmpClient, QmpCommandError } from '../../src/vm/qmp-client.js';

/**
 * The QMP client against a scripted QMP peer on a real unix socket. The scripted peer lets
 * the tests do what QEMU does only sometimes: answer out of order, never answer, hang up.
 */

const dir = mkdtempSync('/tmp/podvisor-qmptest-');
let n = 0;

type Handler = (msg: { execute: string; id: string; arguments?: unknown }, sock: Socket) => void;

function fakeQemu(handler: Handler): Promise<{ path: string; server: Server; sockets: Socket[] }> {
  const path = join(dir, `qmp${n++}.sock`);
  const sockets: Socket[] = [];
  const server = createServer((sock) => {
    sockets.push(sock);
    sock.write('{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}\r\n');
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (msg.execute === 'qmp_capabilities') sock.write(`{"return": {}, "id": ${JSON.stringify(msg.id)}}\r\n`);
        else handler(msg, sock);
      }
    });
  });
  return new Promise((resolve) => server.listen(path, () => resolve({ path, server, sockets })));
}

const reply = (sock: Socket, id: string, ret: unknown) => sock.write(`${JSON.stringify({ return: ret, id })}\r\n`);

describe('QMP client', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('matches replies to requests by id, not by order', async () => {
    const held: Array<{ id: string; execute: string }> = [];
    const { path, server } = await fakeQemu((msg, sock) => {
      held.push(msg);
      // Answer the second request first, then the first.
      if (held.length === 2) for (const m of [...held].reverse()) reply(sock, m.id, { status: m.execute === 'query-status' ? 'running' : 'x', running: true });
    });
    const qmp = await QmpClient.connect(path);
    const [a, b] = await Promise.all([qmp.execute('query-status'), qmp.execute('query-version')]);
    assert.equal(a.status, 'running');
    assert.equal((b as unknown as { status: string }).status, 'x');
    assert.notEqual(held[0].id, held[1].id);
    qmp.close();
    server.close();
  });

  it('passes arguments and turns QMP errors into QmpCommandError', async () => {
    let seen: unknown;
    const { path, server } = await fakeQemu((msg, sock) => {
      seen = msg.arguments;
      sock.write(`${JSON.stringify({ error: { class: 'GenericError', desc: "Duplicate nodes with node-name='hd1'" }, id: msg.id })}\n`);
    });
    const qmp = await QmpClient.connect(path);
    await assert.rejects(qmp.execute('blockdev-add', { driver: 'file', 'node-name': 'hd1', filename: '/x' }), (e: unknown) => {
      assert.ok(e instanceof QmpCommandError);
      assert.equal(e.qmpClass, 'GenericError');
      assert.match(e.message, /blockdev-add failed: Duplicate nodes/);
      return true;
    });
    assert.deepEqual(seen, { driver: 'file', 'node-name': 'hd1', filename: '/x' });
    qmp.close();
    server.close();
  });

  it('times out a command that gets no answer and keeps working afterwards', async () => {
    let calls = 0;
    const { path, server } = await fakeQemu((msg, sock) => {
      if (calls++ > 0) reply(sock, msg.id, { status: 'running', running: true });
    });
    const qmp = await QmpClient.connect(path);
    await assert.rejects(qmp.execute('query-status', undefined, { timeoutMs: 100 }), { code: 'DEADLINE_EXCEEDED', message: /query-status.*100 ms/ });
    assert.equal((await qmp.execute('query-status')).status, 'running');
    qmp.close();
    server.close();
  });

  it('delivers events with their data and can wait for a matching one', async () => {
    const { path, server, sockets } = await fakeQemu(() => undefined);
    const qmp = await QmpClient.connect(path);
    const events: string[] = [];
    qmp.on('event', (e) => events.push(e.event));
    const waiting = qmp.waitForEvent('DEVICE_DELETED', (d) => d.device === 'hd2', 2000);
    const ts = '"timestamp": {"seconds": 1, "microseconds": 2}';
    sockets[0].write(`{"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/hd1"}, ${ts}}\r\n`);
    sockets[0].write(`{"event": "DEVICE_DELETED", "data": {"device": "hd2", "path": "/machine/peripheral/hd2"}, ${ts}}\r\n`);
    sockets[0].write(`{"event": "STOP", ${ts}}\r\n`);
    const ev = await waiting;
    assert.deepEqual(ev.data, { device: 'hd2', path: '/machine/peripheral/hd2' });
    assert.deepEqual(ev.timestamp, { seconds: 1, microseconds: 2 });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(events, ['DEVICE_DELETED', 'DEVICE_DELETED', 'STOP']);
    qmp.close();
    server.close();
  });

  it('rejects pending commands when the connection drops, and says so afterwards', async () => {
    const { path, server } = await fakeQemu((_msg, sock) => sock.destroy());
    const qmp = await QmpClient.connect(path);
    const closed = new Promise<void>((r) => qmp.once('close', r));
    await assert.rejects(qmp.execute('query-status'), { code: 'UNAVAILABLE', message: /closed before query-status/ });
    await closed;
    assert.equal(qmp.isClosed, true);
    await assert.rejects(qmp.execute('cont'), { code: 'UNAVAILABLE' });
    server.close();
  });

  it('keeps retrying while the socket does not exist yet, then connects', async () => {
    const path = join(dir, 'late.sock');
    const connecting = QmpClient.connect(path, { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 150));
    const server = createServer((sock) => {
      sock.write('{"QMP": {"version": {}, "capabilities": []}}\n');
      sock.on('data', (d) => {
        const msg = JSON.parse(d.toString());
        reply(sock, msg.id, {});
      });
    });
    await new Promise<void>((r) => server.listen(path, r));
    const qmp = await connecting;
    assert.equal(qmp.isClosed, false);
    qmp.close();
    server.close();
  });

  it('gives up with UNAVAILABLE when nothing listens before the deadline', async () => {
    await assert.rejects(QmpClient.connect(join(dir, 'never.sock'), { timeoutMs: 200 }), { code: 'UNAVAILABLE', message: /never\.sock/ });
  });

  it('stops retrying when aborted', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(QmpClient.connect(join(dir, 'never2.sock'), { timeoutMs: 5000, signal: ac.signal }), { name: 'AbortError' });
  });
});
