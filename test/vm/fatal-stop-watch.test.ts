import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FATAL_RUN_STATES, watchFatalStop } from '../../src/vm/fatal-stop.js';
import { QmpClient } from '../../src/vm/qmp-client.js';
import type { RunState } from '../../src/vm/qmp-types.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The STOP watcher alone, against a scripted QMP peer: it is the only way to show the
 * `internal-error` path on a machine without KVM (only KVM pauses a VM that way). The real
 * QEMU cases (an I/O error pause, a panic, a kill) are in fatal-stop.test.ts and hardening.test.ts.
 */

const dir = mkdtempSync('/tmp/podvisor-fatalstop-');
let n = 0;

/** A QMP peer whose query-status answers `status`; `stop(sock)` sends a STOP event. */
function fakeQemu(status: () => RunState): Promise<{ path: string; server: Server; sockets: Socket[] }> {
  const path = join(dir, `qmp${n++}.sock`);
  const sockets: Socket[] = [];
  const server = createServer((sock) => {
    sockets.push(sock);
    sock.write('{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}\r\n');
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, i)) as { execute: string; id: string };
        buf = buf.slice(i + 1);
        const ret = msg.execute === 'query-status' ? { status: status(), running: false } : {};
        sock.write(`${JSON.stringify({ return: ret, id: msg.id })}\r\n`);
      }
    });
  });
  return new Promise((resolve) => server.listen(path, () => resolve({ path, server, sockets })));
}

const event = (sock: Socket, name: string, data: object = {}) =>
  sock.write(`${JSON.stringify({ event: name, data, timestamp: { seconds: 1, microseconds: 0 } })}\r\n`);

/**
 * What the watcher reports after `send`, or undefined if it reports nothing within `windowMs`.
 * A report takes an event, a query-status and its answer: on a loaded host that can take far
 * longer than the short window that is enough to show a STOP is ignored, so a case that
 * expects a report waits for it (the window only bounds a test that would otherwise hang).
 */
async function watchOnce(status: RunState, send: (sock: Socket) => void, windowMs = 60_000): Promise<RunState | undefined> {
  const peer = await fakeQemu(() => status);
  const qmp = await QmpClient.connect(peer.path);
  let timer: NodeJS.Timeout | undefined;
  try {
    const seen = new Promise<RunState>((resolve) => watchFatalStop(qmp, resolve));
    send(peer.sockets[0]!);
    return await Promise.race([seen, new Promise<undefined>((r) => { timer = setTimeout(() => r(undefined), windowMs); })]);
  } finally {
    clearTimeout(timer);
    qmp.close();
    peer.server.close();
  }
}

/** Long enough for a wrong report to show; nothing arriving is the expected outcome, so a slow host cannot fail it. */
const QUIET_MS = 300;

describe('fatal STOP watcher', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reports a STOP that leaves the VM in internal-error (a KVM emulation failure)', async () => {
    assert.equal(await watchOnce('internal-error', (s) => event(s, 'STOP')), 'internal-error');
  });

  it('reports every state the guest cannot continue from', async () => {
    for (const st of ['io-error', 'guest-panicked', 'shutdown'] as RunState[]) {
      assert.ok(FATAL_RUN_STATES.has(st));
      assert.equal(await watchOnce(st, (s) => event(s, 'STOP')), st);
    }
  });

  it('ignores a STOP that is an ordinary pause (podvisor\'s own stop, a migration)', async () => {
    for (const st of ['paused', 'postmigrate', 'finish-migrate'] as RunState[]) {
      assert.equal(await watchOnce(st, (s) => event(s, 'STOP'), QUIET_MS), undefined);
    }
  });

  it('takes a guest panic whose action is pause without asking', async () => {
    assert.equal(await watchOnce('running', (s) => event(s, 'GUEST_PANICKED', { action: 'pause' })), 'guest-panicked');
    assert.equal(await watchOnce('running', (s) => event(s, 'GUEST_PANICKED', { action: 'poweroff' }), QUIET_MS), undefined, 'poweroff ends QEMU by itself');
  });

  it('fires once however many STOPs follow', async () => {
    const peer = await fakeQemu(() => 'internal-error');
    const qmp = await QmpClient.connect(peer.path);
    let calls = 0;
    watchFatalStop(qmp, () => calls++);
    for (let i = 0; i < 3; i++) event(peer.sockets[0]!, 'STOP');
    await waitFor('the first report', () => (calls > 0 ? true : undefined), 60_000, 20);
    await new Promise((r) => setTimeout(r, QUIET_MS)); // room for a second report, which must not come
    assert.equal(calls, 1);
    qmp.close();
    peer.server.close();
  });
});
