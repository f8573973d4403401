import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ContainerService } from '../../src/pod/container-service.js';
import type { GuestAgent, GuestExit } from '../../src/pod/guest-agent.js';
import { PodContext, type SandboxRuntime } from '../../src/pod/pod-context.js';
import { StateStore } from '../../src/pod/state-store.js';
import type { Vm } from '../../src/vm/vm.js';
import { sampleContainer, sampleSandbox } from '../helpers/pod-records.js';

/**
 * The container service's own logic against a scripted agent (no VM): the
 * order of events when a process exits before StartContainer returns, the
 * stop signal then SIGKILL after the timeout, and "EXITED means the log is
 * complete".
 */
class ScriptedAgent {
  outputListeners: Array<(ev: { containerId: string; stream: 'stdout' | 'stderr'; data: Uint8Array }) => void> = [];
  exitListeners: Array<(ev: GuestExit) => void> = [];
  signals: number[] = [];
  onStart: (id: string) => void = () => undefined;
  onSignal: (id: string, sig: number) => void = () => undefined;
  async startContainer(id: string) {
    this.onStart(id);
    await new Promise((r) => setTimeout(r, 20));
    return { pid: 42 };
  }
  async signalContainer(id: string, sig: number) {
    this.signals.push(sig);
    this.onSignal(id, sig);
  }
  async containerState() {
    return { status: 'running' as const, pid: 42 };
  }
  onOutput(l: ScriptedAgent['outputListeners'][number]) { this.outputListeners.push(l); }
  onExit(l: (ev: GuestExit) => void) { this.exitListeners.push(l); }
  exit(ev: GuestExit) { for (const l of this.exitListeners) l(ev); }
  output(containerId: string, text: string) { for (const l of this.outputListeners) l({ containerId, stream: 'stdout', data: Buffer.from(text) }); }
}

async function setup() {
  const dir = await mkdtemp(join(tmpdir(), 'podvisor-csvc-'));
  const store = new StateStore(join(dir, 'pods'));
  await store.init();
  const ctx = new PodContext(store, { find: async () => undefined, ensureDisk: async () => '' }, async () => { throw new Error('unused'); },
    { vmRunRoot: join(dir, 'vms'), runtimes: {}, bootTimeoutMs: 1000 });
  const svc = new ContainerService(ctx);
  const agent = new ScriptedAgent();
  agent.onOutput((ev) => svc.handleOutput(ev));
  agent.onExit((ev) => void svc.recordExit(ev));
  const sandbox = sampleSandbox();
  await store.saveSandbox(sandbox);
  ctx.index.addSandbox(sandbox);
  const rt: SandboxRuntime = { vm: {} as Vm, agent: agent as unknown as GuestAgent, stopping: false, imagePlugs: new Map() };
  ctx.runtimes.set(sandbox.id, rt);
  const c = sampleContainer(sandbox.id, 'app', { logFile: join(dir, 'logs', 'app.log') });
  await store.saveContainer(c);
  ctx.index.addContainer(c);
  const events: string[] = [];
  ctx.events.subscribe((ev) => events.push(ev.type));
  return { dir, ctx, svc, agent, c, events, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

test('an exit that arrives before StartContainer returns is recorded after STARTED', async () => {
  const { svc, agent, c, events, cleanup } = await setup();
  try {
    agent.onStart = (id) => {
      agent.output(id, 'quick\n');
      agent.exit({ containerId: id, exitCode: 0, oomKilled: false });
    };
    await svc.start(c.id);
    assert.deepEqual(events, ['started', 'stopped']);
    assert.equal(c.state, 'exited');
    assert.equal(c.reason, 'Completed');
    assert.ok(BigInt(c.finishedAt!) >= BigInt(c.startedAt!));
    assert.match(await readFile(c.logFile, 'utf8'), / stdout F quick\n$/);
  } finally {
    await cleanup();
  }
});

test('StopContainer sends the stop signal, then SIGKILL when the timeout passes', async () => {
  const { svc, agent, c, cleanup } = await setup();
  try {
    await svc.start(c.id);
    agent.onSignal = (id, sig) => {
      if (sig === 9) setTimeout(() => agent.exit({ containerId: id, exitCode: 137, oomKilled: false }), 10);
    };
    await svc.stop(c.id, 1);
    assert.deepEqual(agent.signals, [15, 9]);
    assert.equal(c.state, 'exited');
    assert.equal(c.exitCode, 137);
    assert.equal(c.reason, 'Error');
  } finally {
    await cleanup();
  }
});

test('a container that exits on the stop signal gets no SIGKILL; OOM kills are OOMKilled', async () => {
  const { svc, agent, c, cleanup } = await setup();
  try {
    await svc.start(c.id);
    agent.onSignal = (id) => setTimeout(() => agent.exit({ containerId: id, exitCode: 137, oomKilled: true }), 10);
    await svc.stop(c.id, 30);
    assert.deepEqual(agent.signals, [15]);
    assert.equal(c.reason, 'OOMKilled');
    await svc.stop(c.id, 30); // already exited: nothing to do
    assert.deepEqual(agent.signals, [15]);
  } finally {
    await cleanup();
  }
});
