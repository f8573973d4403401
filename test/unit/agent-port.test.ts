import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { agentPortOpened, watchAgentPort } from '../../src/vm/agent-port.js';
import type { QmpClient } from '../../src/vm/qmp-client.js';

/** Only the event side of QMP matters here: a plain emitter stands in for the client. */
function fakeQmp(): EventEmitter & QmpClient {
  return new EventEmitter() as EventEmitter & QmpClient;
}
const event = (data: { id: string; open: boolean }) => ({ event: 'VSERPORT_CHANGE', data, timestamp: { seconds: 0, microseconds: 0 } });

describe('agentPortOpened (wakes the agent probe when the guest opens its port)', () => {
  it('resolves on the agent port opening, not on other ports or a close', async () => {
    const qmp = fakeQmp();
    const port = agentPortOpened(qmp);
    let opened = false;
    void port.opened.then(() => (opened = true));
    qmp.emit('event', event({ id: 'other-port', open: true }));
    qmp.emit('event', event({ id: 'agent-port', open: false }));
    qmp.emit('event', { event: 'RESUME', data: {}, timestamp: { seconds: 0, microseconds: 0 } });
    await new Promise((r) => setImmediate(r));
    assert.equal(opened, false);
    qmp.emit('event', event({ id: 'agent-port', open: true }));
    await port.opened;
    port.dispose();
    assert.equal(qmp.listenerCount('event'), 0, 'dispose removes the listener');
  });
});

describe('watchAgentPort (tells the agent client each time the guest opens or closes its port)', () => {
  it('reports every change of the agent port, none of other ports or events, until disposed', () => {
    const qmp = fakeQmp();
    let changes = 0;
    const watch = watchAgentPort(qmp, () => changes++);
    qmp.emit('event', event({ id: 'agent-port', open: false }));
    qmp.emit('event', event({ id: 'agent-port', open: true }));
    qmp.emit('event', event({ id: 'other-port', open: false }));
    qmp.emit('event', { event: 'RESUME', data: {}, timestamp: { seconds: 0, microseconds: 0 } });
    assert.equal(changes, 2);
    watch.dispose();
    qmp.emit('event', event({ id: 'agent-port', open: false }));
    assert.equal(changes, 2);
    assert.equal(qmp.listenerCount('event'), 0, 'dispose removes the listener');
  });
});
