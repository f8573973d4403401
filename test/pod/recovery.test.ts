import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { unary } from '../helpers/daemon.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import { containerConfig, containerState, readCriLog, sandboxConfig, waitContainerState, waitFor } from '../helpers/cri.js';

/**
 * podvisord killed with SIGKILL and started again on the same folders keeps
 * every pod: the VM keeps running, states are right (including a container
 * that exited while no daemon ran), logs keep being written. Then the VM
 * itself is killed: the pod turns NOTREADY and its containers EXITED.
 */
describe('daemon restart and VM death', () => {
  let env: PodTestEnv;
  let sandboxId: string;
  let qemuPid: number;
  let ticker: string;
  let quitter: string;
  let idle: string;
  const rt = () => env.daemon.client.runtime;
  let sandboxCfg: ReturnType<typeof sandboxConfig>;

  const ticks = async (path: string) => (await readCriLog(path)).map((l) => Number(/^tick (\d+)$/.exec(l.text)?.[1]));

  before(async () => {
    env = await startPodTestEnv();
    await env.pull(env.busybox);
    sandboxCfg = sandboxConfig('keeper', join(env.dir, 'logs', 'keeper'));
    sandboxId = (await unary(rt(), 'RunPodSandbox', { config: sandboxCfg })).pod_sandbox_id;
    qemuPid = JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId, verbose: true })).info.info!).vm.pid;
    const create = async (name: string, cmd: string) => (await unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg, config: containerConfig(name, env.busybox, ['sh', '-c', cmd]),
    })).container_id;
    ticker = await create('ticker', 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.2; done');
    quitter = await create('quitter', 'sleep 4; echo done; exit 7');
    idle = await create('idle', 'sleep 1000');
    await unary(rt(), 'StartContainer', { container_id: ticker });
    await unary(rt(), 'StartContainer', { container_id: quitter });
  });

  after(async () => {
    await env?.dispose();
  });

  test('after SIGKILL and restart every sandbox and container is there with the right state', async () => {
    await waitFor('ticker output', async () => ((await ticks(join(env.dir, 'logs', 'keeper', 'ticker.log'))).length > 3 ? true : undefined));
    await env.killDaemon();
    // The quitter exits while no daemon runs (it sleeps 4 s).
    await new Promise((r) => setTimeout(r, 6_000));
    assert.ok(existsSync(`/proc/${qemuPid}`), 'the VM outlived the daemon');
    await env.startDaemon();

    const sandboxes = (await unary(rt(), 'ListPodSandbox', {})).items;
    assert.deepEqual(sandboxes.map((s) => [s.id, s.state]), [[sandboxId, 'SANDBOX_READY']]);
    const info = JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId, verbose: true })).info.info!);
    assert.equal(info.vm.pid, qemuPid, 'the same QEMU');

    assert.equal((await containerState(env.daemon.client, ticker)).state, 'CONTAINER_RUNNING');
    // The quitter's `sleep 4` ends while no daemon runs on any usual host (recovery then finds the exit); a guest
    // slowed past the 6 s wait ends it after the restart, which the live path records: EXITED with its code either way.
    const q = await waitContainerState(env.daemon.client, quitter, 'CONTAINER_EXITED', 60_000);
    assert.equal(q.exit_code, 7);
    assert.equal(q.reason, 'Error');
    assert.ok(BigInt(q.finished_at) >= BigInt(q.started_at));
    assert.equal((await containerState(env.daemon.client, idle)).state, 'CONTAINER_CREATED');
  });

  test('logs keep being written after the restart, including what was printed while no daemon ran', async () => {
    const quitterLog = (await readCriLog(join(env.dir, 'logs', 'keeper', 'quitter.log'))).map((l) => l.text);
    assert.deepEqual(quitterLog, ['done'], 'output produced while the daemon was down is not lost');
    const path = join(env.dir, 'logs', 'keeper', 'ticker.log');
    const before = (await ticks(path)).length;
    await waitFor('new ticker lines', async () => ((await ticks(path)).length > before + 5 ? true : undefined));
    const all = await ticks(path);
    assert.ok(all.every((n, i) => i === 0 || n > all[i - 1]!), 'in order, no line twice');
    // The agent queues what it prints while no daemon listens and replays it on reconnect; only an
    // event already on its way to the daemon at the instant of the SIGKILL can be lost with it.
    const missing = all.at(-1)! + 1 - all.length;
    assert.ok(missing <= 2, `${missing} lines missing: ${JSON.stringify(all)}`);
  });

  test('the restarted daemon drives the pod: exec, start, name reservations', async () => {
    const res = await unary(rt(), 'ExecSync', { container_id: ticker, cmd: ['echo', 'still here'], timeout: 30 });
    assert.equal(res.stdout.toString(), 'still here\n');
    await unary(rt(), 'StartContainer', { container_id: idle });
    await waitContainerState(env.daemon.client, idle, 'CONTAINER_RUNNING');
    await assert.rejects(unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg, config: containerConfig('ticker', env.busybox, ['true']),
    }), (e: { code?: number }) => e.code === 6);
  });

  test('a graceful daemon stop (SIGTERM) leaves the pod running too', async () => {
    const path = join(env.dir, 'logs', 'keeper', 'ticker.log');
    env.daemon.client.close();
    assert.equal(await env.daemon.stop('SIGTERM'), 0);
    assert.ok(existsSync(`/proc/${qemuPid}`));
    await env.startDaemon();
    assert.equal((await containerState(env.daemon.client, ticker)).state, 'CONTAINER_RUNNING');
    const before = (await ticks(path)).length;
    await waitFor('new ticker lines', async () => ((await ticks(path)).length > before + 3 ? true : undefined));
  });

  test('kill -9 of the QEMU process: sandbox NOTREADY and containers EXITED with a reason', async () => {
    process.kill(qemuPid, 'SIGKILL');
    await waitFor('the sandbox to turn NOTREADY', async () => {
      const st = (await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId })).status!;
      return st.state === 'SANDBOX_NOTREADY' ? st : undefined;
    }, 30_000);
    for (const id of [ticker, idle]) {
      const st = await containerState(env.daemon.client, id);
      assert.equal(st.state, 'CONTAINER_EXITED');
      assert.equal(st.reason, 'PodVMExited');
      assert.match(st.message, /VM exited unexpectedly/);
      assert.equal(st.exit_code, 137);
    }
    assert.equal((await containerState(env.daemon.client, quitter)).exit_code, 7, 'an earlier exit is kept');
    const info = JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId, verbose: true })).info.info!);
    assert.match(info.notReadyReason, /crashed|killed/);
  });

  test('RemovePodSandbox then cleans up, and a restarted daemon does not bring it back', async () => {
    await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: sandboxId });
    assert.deepEqual((await unary(rt(), 'ListPodSandbox', {})).items, []);
    assert.deepEqual((await unary(rt(), 'ListContainers', {})).containers, []);
    assert.ok(!existsSync(join(env.daemon.state, 'vms', sandboxId)));
    assert.ok(!existsSync(join(env.daemon.root, 'pods', sandboxId)));
    await env.killDaemon();
    await env.startDaemon();
    assert.deepEqual((await unary(rt(), 'ListPodSandbox', {})).items, []);
  });
});
