import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { unary } from '../helpers/daemon.js';
import { libvirtUnavailable } from '../helpers/libvirtd.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import { containerConfig, containerState, runToExit, sandboxConfig } from '../helpers/cri.js';

/**
 * The libvirt VM backend with a real libvirtd (the test's own, on private sockets and
 * directories): the pod VM is a libvirt domain named after the sandbox, and neither a
 * podvisord restart nor a libvirtd restart loses the pod. The full pod lifecycle suite runs
 * on this backend with `PODVISOR_TEST_VM_BACKEND=libvirt` (test/pod/lifecycle.test.ts).
 */
const skip = await libvirtUnavailable();

describe('libvirt VM backend', { skip }, () => {
  let env: PodTestEnv;
  let sandboxId: string;
  let sandboxCfg: ReturnType<typeof sandboxConfig>;
  let sleeper: string;
  let qemuPid: number;
  const rt = () => env.daemon.client.runtime;
  const domains = () => env.libvirtd!.virsh('list', '--name').split('\n').map((l) => l.trim()).filter(Boolean);
  const vmInfo = async () => JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId, verbose: true })).info.info!).vm;
  const execEcho = async (word: string) => {
    const r = await unary(rt(), 'ExecSync', { container_id: sleeper, cmd: ['echo', word], timeout: 60 });
    assert.equal(r.exit_code, 0);
    assert.equal(r.stdout.toString(), `${word}\n`);
  };

  before(async () => {
    env = await startPodTestEnv({ vmBackend: 'libvirt', startTimeoutMs: 300_000 }, '[daemon]\nboot_timeout_seconds = 900\n');
    await env.pull(env.busybox);
    await env.pull(`${env.registry.host}/podvisor-test/busybox:uid`);
    sandboxCfg = sandboxConfig('lv', join(env.dir, 'logs', 'lv'));
    sandboxId = (await unary(rt(), 'RunPodSandbox', { config: sandboxCfg, runtime_handler: 'kata' })).pod_sandbox_id;
    sleeper = (await unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg, config: containerConfig('sleeper', env.busybox, ['sleep', '3600']),
    })).container_id;
    await unary(rt(), 'StartContainer', { container_id: sleeper });
    qemuPid = (await vmInfo()).pid;
  });

  after(async () => {
    await env?.dispose();
  });

  test('virsh list shows the pod VM by its sandbox id, and that domain is the QEMU podvisor reports', async () => {
    assert.ok(domains().includes(`podvisor-${sandboxId}`), `virsh list: ${domains().join(', ')}`);
    const argv = readFileSync(`/proc/${qemuPid}/cmdline`, 'utf8').split('\0');
    assert.ok(argv.some((a) => a.includes(`guest=podvisor-${sandboxId}`)), 'the reported pid is the domain\'s QEMU');
    const xml = env.libvirtd!.virsh('dumpxml', `podvisor-${sandboxId}`);
    assert.match(xml, /<domain type='qemu'/, 'TCG here: domain type qemu, not kvm');
    assert.match(xml, /machine='microvm'/);
    await execEcho('hello');
  });

  test('a podvisord restart loses no pod: the same domain and QEMU, the container still runs', async () => {
    await env.killDaemon();
    await env.startDaemon();
    const [s] = (await unary(rt(), 'ListPodSandbox', {})).items;
    assert.equal(s?.state, 'SANDBOX_READY');
    assert.equal((await vmInfo()).pid, qemuPid);
    assert.equal((await containerState(env.daemon.client, sleeper)).state, 'CONTAINER_RUNNING');
    await execEcho('after-podvisord-restart');
  });

  test('a libvirtd restart loses no pod, and podvisor keeps using libvirt afterwards', async () => {
    await env.libvirtd!.restart();
    assert.ok(domains().includes(`podvisor-${sandboxId}`), 'libvirtd found the running domain again');
    assert.ok(existsSync(`/proc/${qemuPid}`), 'the same QEMU');
    assert.equal((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId })).status!.state, 'SANDBOX_READY');
    await execEcho('after-libvirtd-restart');
    // A new image disk is hot-plugged after the restart, and a second pod is created through the new libvirt connection.
    const r = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('uid', `${env.registry.host}/podvisor-test/busybox:uid`, ['id', '-u']));
    assert.equal(r.status.exit_code, 0);
    const cfg2 = sandboxConfig('lv2', join(env.dir, 'logs', 'lv2'));
    const second = (await unary(rt(), 'RunPodSandbox', { config: cfg2 })).pod_sandbox_id;
    assert.ok(domains().includes(`podvisor-${second}`));
    await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: second });
    assert.ok(!domains().includes(`podvisor-${second}`), 'removing the pod ended its domain');
  });

  test('StopPodSandbox ends the domain and its QEMU; RemovePodSandbox leaves no run directory', async () => {
    await unary(rt(), 'StopPodSandbox', { pod_sandbox_id: sandboxId });
    assert.ok(!domains().includes(`podvisor-${sandboxId}`));
    assert.ok(!existsSync(`/proc/${qemuPid}`), 'QEMU is gone');
    await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: sandboxId });
    assert.ok(!existsSync(join(env.daemon.state, 'vms', sandboxId)));
  });
});
