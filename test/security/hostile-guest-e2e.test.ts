import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, renameSync } from 'node:fs';
import { stat } from 'node:fs/promises';
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
 *  - H4, H1, C1 across daemon restarts: a pod's agent socket is taken over
 *    by a compromised agent while podvisord is down (the threat: root in the
 *    guest replacing the agent). First the flooding pod's agent never answers
 *    its recovery calls and sends events naming the victim pod's container:
 *    podvisord must serve, give up on that pod only (NOTREADY, VM stopped)
 *    and leave the victim untouched. Then the victim's agent sends an
 *    undecodable event: podvisord must live on and give up on that pod.
 * One daemon and two VMs shared by the tests of this file.
 */
describe('hostile guests against a real podvisord', () => {
  let env: PodTestEnv;
  const rt = () => env.daemon.client.runtime;
  const ids: Record<'flood' | 'victim', string> = { flood: '', victim: '' };
  let victimContainer = '';
  let floodContainer = '';
  const hostile: HostileAgent[] = [];

  const pidOf = async (sandbox: string): Promise<number> =>
    JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandbox, verbose: true })).info.info!).vm.pid;

  before(async () => {
    env = await startPodTestEnv();
    await env.pull(env.busybox);
    for (const name of ['flood', 'victim'] as const) {
      const config = sandboxConfig(name, join(env.dir, 'logs', name));
      try {
        ids[name] = (await unary(rt(), 'RunPodSandbox', { config })).pod_sandbox_id;
      } catch (e) {
        console.log(`RunPodSandbox ${name} failed; podvisord said:\n${env.daemon.output().split('\n').slice(-40).join('\n')}`);
        throw e;
      }
    }
    const create = async (sandbox: 'flood' | 'victim', name: string, cmd: string[], extra: Record<string, unknown> = {}) => (await unary(rt(), 'CreateContainer', {
      pod_sandbox_id: ids[sandbox], sandbox_config: sandboxConfig(sandbox, join(env.dir, 'logs', sandbox)), config: containerConfig(name, env.busybox, cmd, extra),
    })).container_id;
    victimContainer = await create('victim', 'web', ['sh', '-c', 'while true; do echo alive; sleep 1; done']);
    await unary(rt(), 'StartContainer', { container_id: victimContainer });
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

  test('H2: a container running `yes \'\'` keeps another pod\'s CRI latency under 100 ms p99', async (t) => {
    const quiet = await statusLatency(100);
    await unary(rt(), 'StartContainer', { container_id: floodContainer });
    const floodLog = join(env.dir, 'logs', 'flood', 'yes.log');
    await waitFor('the flood to start', async () => ((await stat(floodLog).catch(() => undefined))?.size ?? 0) > 0 ? true : undefined);
    await new Promise((r) => setTimeout(r, 2000)); // let it reach its steady rate
    const before = (await stat(floodLog)).size;
    const t0 = Date.now();
    const flooded = await statusLatency(300);
    const seconds = (Date.now() - t0) / 1000;
    const written = (await stat(floodLog)).size - before;
    await unary(rt(), 'StopContainer', { container_id: floodContainer, timeout: 0 });
    console.log(`H2: another pod's CRI call latency before the flood: p50 ${quiet.p50.toFixed(1)} ms, p99 ${quiet.p99.toFixed(1)} ms; `
      + `with \`yes ''\` running: p50 ${flooded.p50.toFixed(1)} ms, p99 ${flooded.p99.toFixed(1)} ms, max ${flooded.max.toFixed(1)} ms; `
      + `the flood wrote ${(written / 2 ** 20 / seconds).toFixed(1)} MiB/s of CRI log meanwhile`);
    assert.ok(written > 1 << 20, 'the flood was really flowing');
    assert.equal((await containerState(env.daemon.client, victimContainer)).state, 'CONTAINER_RUNNING');
    if (flooded.p99 >= 100 && quiet.p99 >= 100) {
      // The rule is about what the flood adds; a host already past the bound without it cannot show that.
      t.skip(`this host is too loaded to measure the rule: p99 is ${quiet.p99.toFixed(1)} ms before any flood, ${flooded.p99.toFixed(1)} ms with it`);
      return;
    }
    assert.ok(flooded.p99 < 100, `p99 ${flooded.p99.toFixed(1)} ms with the flood (${quiet.p99.toFixed(1)} ms before it)`);
  });

  /** While no daemon runs, "root in the guest" replaces a pod's agent with a compromised one. */
  async function takeOver(sandbox: string): Promise<HostileAgent> {
    const socket = join(env.dir, 'state', 'vms', sandbox, 'agent.sock');
    renameSync(socket, `${socket}.real`);
    const agent = await new HostileAgent({}, socket).listen();
    hostile.push(agent);
    return agent;
  }

  const notReadyReason = async (id: string): Promise<string> =>
    JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: id, verbose: true })).info.info!).notReadyReason ?? '';

  test('H4, H1: a guest that never answers recovery and forges events for another pod costs only its own pod', async () => {
    const floodPid = await pidOf(ids.flood);
    const victimPid = await pidOf(ids.victim);
    await env.killDaemon();
    // Answers Health, then nothing (H4), while sending events that name the victim's container (H1).
    const silent = await takeOver(ids.flood);
    let forging: NodeJS.Timeout | undefined;
    void silent.subscribed().then(() => {
      forging = setInterval(() => {
        silent.sendEvent({ output: { containerId: victimContainer, execId: '', stream: 'STDOUT', data: Buffer.from('forged by another pod\n') } });
        silent.sendEvent({ exit: { containerId: victimContainer, execId: '', exitCode: 137, oomKilled: true, exitedAtUnixNanos: 0 } });
      }, 200);
    });

    const t0 = Date.now();
    await env.startDaemon(); // resolves once the CRI socket serves
    const startMs = Date.now() - t0;
    clearInterval(forging);
    console.log(`H4: podvisord served the CRI ${startMs} ms after starting, with one guest that never answered its recovery`);

    const { items } = await unary(rt(), 'ListPodSandbox', {});
    const state = Object.fromEntries(items.map((s) => [s.id, s.state]));
    assert.deepEqual([state[ids.flood], state[ids.victim]], ['SANDBOX_NOTREADY', 'SANDBOX_READY']);
    assert.match(await notReadyReason(ids.flood), /did not finish answering/);
    await waitFor('the silent pod\'s VM to be stopped', async () => (!existsSync(`/proc/${floodPid}`) ? true : undefined), 30_000);
    assert.ok(existsSync(`/proc/${victimPid}`), 'the victim\'s VM runs on');

    // The victim is untouched: running, and its log holds only what its own container printed.
    assert.equal((await containerState(env.daemon.client, victimContainer)).state, 'CONTAINER_RUNNING');
    const lines = (await readCriLog(join(env.dir, 'logs', 'victim', 'web.log'))).map((l) => l.text);
    assert.ok(lines.length > 0 && lines.every((t) => t === 'alive'), `victim log: ${JSON.stringify(lines.filter((t) => t !== 'alive').slice(0, 3))}`);
    assert.match(env.daemon.output(), /dropped guest events naming a container outside this sandbox/);
  });

  test('C1: an undecodable event from a guest does not crash podvisord; that pod turns NOTREADY', async () => {
    const victimPid = await pidOf(ids.victim);
    await env.killDaemon();
    const garbler = await takeOver(ids.victim);
    void garbler.subscribed().then((stream) => {
      stream.send(eventCodec().encode({ log: { source: 'agent', level: 'info', message: 'hello' }, sequence: 1 } as never));
      stream.send(Buffer.from([0xff, 0xff, 0xff])); // invalid wire type: protobufjs throws on it
    });
    await env.startDaemon();
    await waitFor('the pod to be given up on', async () => ((await unary(rt(), 'ListPodSandbox', {})).items.find((s) => s.id === ids.victim)?.state === 'SANDBOX_NOTREADY' ? true : undefined), 30_000);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(env.daemon.proc.exitCode, null, 'podvisord is alive');
    assert.ok((await unary(rt(), 'Version', { version: 'v1' })).runtime_name, 'and serving');
    assert.match(await notReadyReason(ids.victim), /broke the agent protocol/);
    await waitFor('its VM to be stopped', async () => (!existsSync(`/proc/${victimPid}`) ? true : undefined), 30_000);
    assert.equal(env.daemon.output().split('closing its channel for good').length - 1, 1, 'the protocol error is logged once');
  });
});
