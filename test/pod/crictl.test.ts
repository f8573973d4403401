import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';

const run = promisify(execFile);

// crictl is not packaged for Debian 12; it is built from kubernetes-sigs/cri-tools for testing and
// never shipped here, so a machine without it skips this file and says why.
const noCrictl = spawnSync('crictl', ['--version']).status !== 0 && 'crictl is not on PATH (build it from kubernetes-sigs/cri-tools to run these)';

/** crictl, kubelet's debugging CLI, against podvisord as it would be used against containerd. */
describe('crictl', { skip: noCrictl }, () => {
  let env: PodTestEnv;
  let podId: string;
  let ctrId: string;
  let podJson: string;

  const crictl = async (...args: string[]) => {
    const endpoint = `unix://${env.daemon.socket}`;
    const { stdout } = await run('crictl', ['--runtime-endpoint', endpoint, '--image-endpoint', endpoint, '--timeout', '120s', ...args], { maxBuffer: 8 << 20 });
    return stdout.trim();
  };

  before(async () => {
    env = await startPodTestEnv();
    podJson = join(env.dir, 'pod.json');
    writeFileSync(podJson, JSON.stringify({
      metadata: { name: 'crictl-pod', namespace: 'default', uid: 'crictl-uid', attempt: 1 },
      hostname: 'crictl-pod',
      log_directory: join(env.dir, 'logs', 'crictl-pod'),
      labels: { tool: 'crictl' },
      linux: {},
    }));
    writeFileSync(join(env.dir, 'ctr.json'), JSON.stringify({
      metadata: { name: 'shell' },
      image: { image: env.busybox },
      command: ['sh', '-c', 'echo ready; while true; do sleep 1; done'],
      log_path: 'shell.log',
      linux: {},
    }));
  });

  after(async () => {
    await env?.dispose();
  });

  test('pull, runp, create, start, ps, pods', async () => {
    await crictl('pull', env.busybox);
    podId = await crictl('runp', podJson);
    assert.match(podId, /^[0-9a-f]{64}$/);
    ctrId = await crictl('create', podId, join(env.dir, 'ctr.json'), podJson);
    assert.match(ctrId, /^[0-9a-f]{64}$/);
    assert.equal(await crictl('start', ctrId), ctrId);
    const ps = await crictl('ps', '-o', 'json');
    const containers = JSON.parse(ps).containers as Array<{ id: string; state: string; podSandboxId: string }>;
    assert.deepEqual(containers.map((c) => [c.id, c.state, c.podSandboxId]), [[ctrId, 'CONTAINER_RUNNING', podId]]);
    const pods = JSON.parse(await crictl('pods', '-o', 'json')).items as Array<{ id: string; state: string }>;
    assert.deepEqual(pods.map((p) => [p.id, p.state]), [[podId, 'SANDBOX_READY']]);
    const table = await crictl('ps', '--pod', podId.slice(0, 12));
    assert.match(table, /shell/);
  });

  test('logs, exec -s, inspect, stats', async () => {
    let logs = '';
    for (let i = 0; i < 50 && !logs.includes('ready'); i++) {
      logs = await crictl('logs', ctrId);
      if (!logs.includes('ready')) await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(logs, 'ready');
    assert.equal(await crictl('exec', '-s', ctrId, 'cat', '/etc/hostname'), 'crictl-pod');
    const inspect = JSON.parse(await crictl('inspect', ctrId));
    assert.equal(inspect.status.state, 'CONTAINER_RUNNING');
    const inspectp = JSON.parse(await crictl('inspectp', podId));
    assert.equal(inspectp.status.state, 'SANDBOX_READY');
    assert.ok(inspectp.info.vm.pid > 0);
    const stats = JSON.parse(await crictl('stats', '-o', 'json', ctrId)).stats as Array<{ attributes: { id: string }; memory: { workingSetBytes: { value: string } } }>;
    assert.equal(stats[0]!.attributes.id, ctrId);
    assert.ok(Number(stats[0]!.memory.workingSetBytes.value) > 0);
    const podStats = JSON.parse(await crictl('statsp', '-o', 'json')).stats as Array<{ attributes: { id: string } }>;
    assert.equal(podStats[0]!.attributes.id, podId);
  });

  test('stop, stopp, rmp', async () => {
    await crictl('stop', '--timeout', '1', ctrId);
    assert.equal(JSON.parse(await crictl('inspect', ctrId)).status.state, 'CONTAINER_EXITED');
    await crictl('stopp', podId);
    assert.equal(JSON.parse(await crictl('inspectp', podId)).status.state, 'SANDBOX_NOTREADY');
    await crictl('rmp', podId);
    assert.equal(JSON.parse(await crictl('pods', '-o', 'json')).items.length, 0);
    assert.equal(JSON.parse(await crictl('ps', '-a', '-o', 'json')).containers.length, 0);
  });
});
