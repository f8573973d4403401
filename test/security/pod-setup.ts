import { mkdtemp, rm } from 'node:fs/promises';
import { EventEmitter } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ContainerService } from '../../src/pod/container-service.js';
import type { GuestAgent, GuestExit } from '../../src/pod/guest-agent.js';
import { PodContext } from '../../src/pod/pod-context.js';
import type { OutputThrottle } from '../../src/pod/output-throttle.js';
import { SandboxService } from '../../src/pod/sandbox-service.js';
import { StateStore } from '../../src/pod/state-store.js';
import type { ContainerRecord, SandboxRecord } from '../../src/pod/records.js';
import type { Vm } from '../../src/vm/vm.js';
import { sampleContainer, sampleSandbox } from '../helpers/pod-records.js';

type OutputEvent = { containerId: string; stream: 'stdout' | 'stderr'; data: Uint8Array };

/** A guest agent whose events the test sends: the pod services' port, scripted (no VM). */
export class ScriptedGuest {
  private readonly out: Array<(ev: OutputEvent) => void> = [];
  private readonly exits: Array<(ev: GuestExit) => void> = [];
  paused = 0;
  resumed = 0;
  signals: Array<[string, number]> = [];
  onSignal: (id: string, sig: number) => void = () => undefined;
  statsDelayMs = 0;
  /** Stats requests received (containers and pod alike). */
  statsCalls = 0;
  onOutput(l: (ev: OutputEvent) => void) { this.out.push(l); }
  onExit(l: (ev: GuestExit) => void) { this.exits.push(l); }
  onProtocolError() {}
  onGuestLog() {}
  onClose() {}
  portChanged() {}
  pauseOutput() { this.paused++; }
  resumeOutput() { this.resumed++; }
  async signalContainer(id: string, sig: number) { this.signals.push([id, sig]); this.onSignal(id, sig); }
  async containerState() { return { status: 'running' as const, pid: 42 }; }
  async containerStats(ids: string[]) {
    this.statsCalls++;
    if (this.statsDelayMs) await this.statsDelay();
    return new Map(ids.map((id) => [id, scriptedStats()]));
  }
  async sandboxStats() {
    this.statsCalls++;
    if (this.statsDelayMs) await this.statsDelay();
    return scriptedStats();
  }
  /** A silent guest's stats wait; unref'd, so a test file does not outlive its tests by it. */
  private statsDelay() {
    return new Promise((r) => setTimeout(r, this.statsDelayMs).unref());
  }
  close() {}
  output(containerId: string, data: string | Buffer) { for (const l of this.out) l({ containerId, stream: 'stdout', data: Buffer.from(data) }); }
  exit(ev: GuestExit) { for (const l of this.exits) l(ev); }
}

function scriptedStats() {
  return {
    timestampMs: Date.now(), cpuUsageNanos: 1000n, memoryWorkingSetBytes: 1, memoryUsageBytes: 1, memoryRssBytes: 1, pageFaults: 0, majorPageFaults: 0, processCount: 1, psi: {},
    detail: { cpuUserNanos: 0n, cpuSystemNanos: 0n, cpuThrottledNanos: 0n, memoryCacheBytes: 0, oomKills: 0, io: { readBytes: 0, writeBytes: 0, readOps: 0, writeOps: 0 } },
  };
}

/** Pod services on a temp store, with sandboxes whose guests are scripted. */
export async function podSetup() {
  const dir = await mkdtemp(join(tmpdir(), 'pv-sec-pod-'));
  const store = new StateStore(join(dir, 'pods'));
  await store.init();
  const ctx = new PodContext(store, { find: async () => undefined, ensureDisk: async () => '' }, async () => { throw new Error('unused'); },
    { vmRunRoot: join(dir, 'vms'), runtimes: {}, bootTimeoutMs: 1000 });
  const containers = new ContainerService(ctx);
  const sandboxes = new SandboxService(ctx, containers);

  async function sandbox(opts: { throttle?: OutputThrottle } = {}): Promise<{ record: SandboxRecord; guest: ScriptedGuest }> {
    const record = sampleSandbox();
    if (opts.throttle) ctx.outputThrottles.set(record.id, opts.throttle);
    record.config.logDirectory = join(dir, 'logs', record.id);
    await store.saveSandbox(record);
    ctx.index.addSandbox(record);
    const guest = new ScriptedGuest();
    // The VM's side: its exit, and a QMP whose events (the agent port opening and closing) never come here.
    const vm = Object.assign(new EventEmitter(), { qmp: new EventEmitter() });
    sandboxes.attach(record, vm as unknown as Vm, guest as unknown as GuestAgent);
    return { record, guest };
  }

  async function runningContainer(sandboxId: string, name: string): Promise<ContainerRecord> {
    const c = sampleContainer(sandboxId, name, { state: 'running', startedAt: '2', logFile: join(dir, 'logs', sandboxId, `${name}.log`) });
    await store.saveContainer(c);
    ctx.index.addContainer(c);
    await containers.openLog(c);
    return c;
  }

  return { dir, ctx, store, containers, sandboxes, sandbox, runningContainer, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
