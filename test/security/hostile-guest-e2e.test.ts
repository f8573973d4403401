import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { eventCodec } from '../../src/agent-protocol/api.js';
import { unary } from '../helpers/daemon.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import { containerConfig, containerState, readCriLog, sandboxConfig, waitFor } from '../helpers/cri.js';
import { HostileAgent } from './hostile-agent.js';

/**
 * The guest rules end to end, through a real podvisord and real VMs
 * (security review 2026-12-01):
 *  - H2: an unprivileged container running `yes ''` does not raise another
 *    pod's CRI call latency above 100 ms p99 (measured here, as the issue asks);
 *  - C1, H1, H4 across a daemon restart: two pods' agent sockets are taken
 *    over by compromised agents while podvisord is down (the threat: root in
 *    the guest replacing the agent). One never answers its recovery calls and
 *    sends events naming the victim pod's container; the other sends an
 *    undecodable event. podvisord must come up and serve, give up on exactly
 *    those two pods (NOTREADY, VMs stopped), and leave the victim untouched.
 * One daemon and three VMs shared by the tests of this file.
 */
describe('hostile guests against a real podvisord', () => {
  let env: PodTestEnv;
  const rt = () => env.daemon.client.runtime;
  const ids: Record<'flood' | 'victim' | 'garbler', string> = { flood: '', victim: '', garbler: '' };
  let victimContainer = '';
  let floodContainer = '';
  const hostile: HostileAgent[] = [];

  const pidOf = async (sandbox: string): Promise<number> =>
    JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandbox, verbose: true })).info.info!).vm.pid;

  before(async () => {
    env = await startPodTestEnv();
    await env.pull(env.busybox);
    for (const name of ['flood', 'victim', 'garbler'] as const) {
      const config = sandboxConfig(name, join(env.dir, 'logs', name));
      ids[name] = (await unary(rt(), 'RunPodSandbox', { config })).pod_sandbox_id;
    }
    const create = async (sandbox: 'flood' | 'victim', name: string, cmd: string[], extra: Record<string, unknown> = {}) => {
      const id = (await unary(rt(), 'CreateContainer', {
        pod_sandbox_id: ids[sandbox], sandbox_config: sandboxConfig(sandbox, join(env.dir, 'logs', sandbox)), config: containerConfig(name, env.busybox, cmd, extra),
      })).container_id;
      await unary(rt(), 'StartContainer', { container_id: id });
      return id;
    };
    victimContainer = await create('victim', 'web', ['sh', '-c', 'while true; do echo alive; sleep 1; done']);
    floodContainer = await create('flood', 'yes', ['yes', ''], { linux: { security_context: { run_as_user: { value: '1000' } } } });
  });

  after(async () => {
    await env?.dispose();
    for (const h of hostile) await h.close();
  });

  /** p50/p99/max of `n` sequential calls of another pod's status, in ms. */
  async function statusLatency(n: number): Promise<{ p50: number; p99: number; max: number }> {
    const samples: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: ids.victim });
      await unary(rt(), 'ContainerStatus', { container_id: victimContainer });
      samples.push((performance.now() - t0) / 2);
      await new Promise((r) => setTimeout(r, 20));
    }
    samples.sort((a, b) => a - b);
    const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!;
    return { p50: at(0.5), p99: at(0.99), max: samples.at(-1)! };
  }

  test('H2: a container running `yes \'\'` keeps another pod\'s CRI latency under 100 ms p99', async () => {
    const floodLog = join(env.dir, 'logs', 'flood', 'yes.log');
    const { size: before } = await import('node:fs/promises').then((fs) => fs.stat(floodLog));
    await new Promise((r) => setTimeout(r, 2000)); // let the flood reach its steady rate
    const flooded = await statusLatency(300);
    const { size: afterSize } = await import('node:fs/promises').then((fs) => fs.stat(floodLog));
    await unary(rt(), 'StopContainer', { container_id: floodContainer, timeout: 0 });
    const quiet = await statusLatency(100);
    console.log(`H2: another pod's CRI call latency with \`yes ''\` running: p50 ${flooded.p50.toFixed(1)} ms, p99 ${flooded.p99.toFixed(1)} ms, max ${flooded.max.toFixed(1)} ms; `
      + `after it stopped: p50 ${quiet.p50.toFixed(1)} ms, p99 ${quiet.p99.toFixed(1)} ms; the flood wrote ${((afterSize - before) / 2 ** 20).toFixed(1)} MiB of CRI log meanwhile`);
    assert.ok(afterSize - before > 1 << 20, 'the flood was really flowing');
    assert.ok(flooded.p99 < 100, `p99 ${flooded.p99.toFixed(1)} ms`);
    assert.equal((await containerState(env.daemon.client, victimContainer)).state, 'CONTAINER_RUNNING');
  });

  test('C1, H1, H4: compromised agents after a restart cost only their own pods', async () => {
    const floodPid = await pidOf(ids.flood);
    const garblerPid = await pidOf(ids.garbler);
    const victimPid = await pidOf(ids.victim);
    await env.killDaemon();

    // While no daemon runs, "root in the guest" replaces two agents.
    const takeOver = async (sandbox: string) => {
      const socket = join(env.dir, 'state', 'vms', sandbox, 'agent.sock');
      renameSync(socket, `${socket}.real`);
      const agent = await new HostileAgent({}, socket).listen();
      hostile.push(agent);
      return agent;
    };
    const silent = await takeOver(ids.flood); // answers Health, then nothing (H4), and forges events (H1)
    const garbler = await takeOver(ids.garbler); // sends an undecodable event (C1)
    let forging: NodeJS.Timeout | undefined;
    void silent.subscribed().then(() => {
      forging = setInterval(() => {
        silent.sendEvent({ output: { containerId: victimContainer, execId: '', stream: 'STDOUT', data: Buffer.from('forged by another pod\n') } });
        silent.sendEvent({ exit: { containerId: victimContainer, execId: '', exitCode: 137, oomKilled: true, exitedAtUnixNanos: 0 } });
      }, 200);
    });
    void garbler.subscribed().then((stream) => {
      stream.send(eventCodec().encode({ output: { containerId: victimContainer, execId: '', stream: 'STDOUT', data: Buffer.from('x') }, sequence: 1 } as never));
      stream.send(Buffer.from([0xff, 0xff, 0xff]));
    });

    const t0 = Date.now();
    await env.startDaemon(); // resolves once the CRI socket serves
    const startMs = Date.now() - t0;
    clearInterval(forging);
    console.log(`H4: podvisord served the CRI ${startMs} ms after starting, with one guest that never answered its recovery`);

    await waitFor('the hostile pods to be given up on', async () => {
      const { items } = await unary(rt(), 'ListPodSandbox', {});
      const state = Object.fromEntries(items.map((s) => [s.id, s.state]));
      return state[ids.flood] === 'SANDBOX_NOTREADY' && state[ids.garbler] === 'SANDBOX_NOTREADY' ? state : undefined;
    }, 30_000);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(env.daemon.proc.exitCode, null, 'podvisord is alive');
    const { items } = await unary(rt(), 'ListPodSandbox', {});
    assert.equal(items.find((s) => s.id === ids.victim)?.state, 'SANDBOX_READY');
    const reasons = await Promise.all([ids.flood, ids.garbler].map(async (id) =>
      JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: id, verbose: true })).info.info!).notReadyReason as string));
    assert.match(reasons[0]!, /did not finish answering/);
    assert.match(reasons[1]!, /broke the agent protocol/);
    await waitFor('the hostile pods\' VMs to be stopped', async () => (!existsSync(`/proc/${floodPid}`) && !existsSync(`/proc/${garblerPid}`) ? true : undefined), 30_000);
    assert.ok(existsSync(`/proc/${victimPid}`), 'the victim\'s VM runs on');

    // The victim is untouched: running, and its log holds only what its own container printed.
    const victim = await containerState(env.daemon.client, victimContainer);
    assert.equal(victim.state, 'CONTAINER_RUNNING');
    const lines = (await readCriLog(join(env.dir, 'logs', 'victim', 'web.log'))).map((l) => l.text);
    assert.ok(lines.length > 0 && lines.every((t) => t === 'alive'), `victim log: ${JSON.stringify(lines.filter((t) => t !== 'alive').slice(0, 3))}`);
    const output = env.daemon.output();
    assert.equal(output.split('broke the agent protocol; closing its channel for good').length - 1, 1, 'the protocol error is logged once');
    assert.match(output, /dropped guest events naming a container outside this sandbox/);
  });
});
