import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killLeftoverVms, startDaemon, unary, type DaemonOptions, type RunningDaemon } from '../helpers/daemon.js';
import { pushTestImages, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { startContainerd, type TestContainerd } from '../helpers/containerd.js';
import { hostNamespaces, removeAllPods, runPod as runPodIn } from './pods.js';

/**
 * A mixed node (issue 18): a VM pod (a real QEMU microvm) and a pass-through
 * pod (a real containerd + runc) at once behind one podvisord, which is
 * killed with SIGKILL and started again. Both kinds keep running and are
 * served through the new podvisord as before, including the pass-through pod
 * whose route the crash lost (the window between containerd's answer and the
 * route table's write).
 */
describe('a mixed node survives kill -9 of podvisord', () => {
  let registry: TestRegistry;
  let containerd: TestContainerd;
  let daemon: RunningDaemon;
  let dir: string;
  let daemonOpts: DaemonOptions;
  let busybox: string;
  const vm = { sandboxId: '', containerId: '' };
  const host = { sandboxId: '', containerId: '' };
  const rt = () => daemon.client.runtime;

  const runPod = async (name: string, extra: Record<string, unknown>) => {
    const { sandboxId, containerId } = await runPodIn(daemon.client, name, extra, {
      logRoot: join(dir, 'logs'), cgroupParent: containerd.cgroupParent, image: busybox, timeoutMs: 20 * 60_000,
    });
    return { sandboxId, containerId };
  };

  async function echo(containerId: string, text: string): Promise<string> {
    const res = await unary(rt(), 'ExecSync', { container_id: containerId, cmd: ['echo', text], timeout: 120 });
    assert.equal(res.exit_code, 0);
    return res.stdout.toString().trim();
  }

  before(async () => {
    registry = await startRegistry();
    await pushTestImages(registry);
    busybox = `${registry.host}/podvisor-test/busybox:latest`;
    containerd = await startContainerd({ registryHost: registry.host, pauseImage: `${registry.host}/podvisor-test/pause:latest` });
    dir = mkdtempSync(join(tmpdir(), 'pvmix-'));
    daemonOpts = {
      dir,
      logLevel: 'info',
      startTimeoutMs: 180_000,
      config: `[daemon]\nboot_timeout_seconds = 900\n[registry]\ninsecure = ["${registry.host}"]\n` +
        `[passthrough]\nendpoint = "${containerd.endpoint}"\nhost_namespaces = true\n`,
    };
    daemon = await startDaemon(daemonOpts);
    await unary(daemon.client.image, 'PullImage', { image: { image: busybox } });
    Object.assign(vm, await runPod('vm', {}));
    Object.assign(host, await runPod('host', hostNamespaces('NODE')));
  });

  after(async () => {
    await removeAllPods(daemon?.client);
    await daemon?.dispose();
    if (dir) killLeftoverVms(join(dir, 'state', 'vms'));
    await containerd?.stop();
    await registry?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('both kinds run side by side: a VM for one, containerd for the other', async () => {
    assert.ok(existsSync(join(daemon.state, 'vms', vm.sandboxId)), 'the VM pod has a VM');
    assert.ok(!existsSync(join(daemon.state, 'vms', host.sandboxId)), 'the host-network pod has none');
    const inCtd = (await unary(containerd.client.runtime, 'ListPodSandbox', {})).items.map((s) => s.id);
    assert.deepEqual(inCtd, [host.sandboxId]);
    const listed = (await unary(rt(), 'ListPodSandbox', {})).items.map((s) => s.id).sort();
    assert.deepEqual(listed, [vm.sandboxId, host.sandboxId].sort());
    assert.equal(await echo(vm.containerId, 'in the vm'), 'in the vm');
    assert.equal(await echo(host.containerId, 'on the host'), 'on the host');
  });

  test('after kill -9 (and a lost route), a new podvisord serves both pods as before', async () => {
    const qemuPid = Number(readFileSync(join(daemon.state, 'vms', vm.sandboxId, 'qemu.pid'), 'utf8').trim());
    daemon.client.close();
    await daemon.stop('SIGKILL');
    // Both kinds keep running without podvisord.
    assert.ok(existsSync(`/proc/${qemuPid}`), 'the VM outlives podvisord');
    const st = (await unary(containerd.client.runtime, 'ContainerStatus', { container_id: host.containerId })).status!;
    assert.equal(st.state, 'CONTAINER_RUNNING', 'the pass-through container outlives podvisord');
    // The crash window: containerd made the pod but the table never named it.
    const routesFile = join(daemon.state, 'passthrough', 'routes.json');
    const routes = JSON.parse(readFileSync(routesFile, 'utf8'));
    assert.ok(routes.sandboxes[host.sandboxId], 'the route was saved');
    delete routes.sandboxes[host.sandboxId];
    delete routes.containers[host.containerId];
    writeFileSync(routesFile, JSON.stringify(routes));

    daemon = await startDaemon(daemonOpts);
    const pods = Object.fromEntries((await unary(rt(), 'ListPodSandbox', {})).items.map((s) => [s.id, s.state]));
    assert.deepEqual(pods, { [vm.sandboxId]: 'SANDBOX_READY', [host.sandboxId]: 'SANDBOX_READY' });
    for (const c of [vm.containerId, host.containerId]) {
      assert.equal((await unary(rt(), 'ContainerStatus', { container_id: c })).status!.state, 'CONTAINER_RUNNING');
    }
    assert.equal(await echo(vm.containerId, 'vm again'), 'vm again');
    assert.equal(await echo(host.containerId, 'host again'), 'host again');
    assert.ok(JSON.parse(readFileSync(routesFile, 'utf8')).sandboxes[host.sandboxId], 'reconciliation took the pod back into the table');
  });

  test('removal through the new podvisord removes each pod from its runtime', async () => {
    for (const id of [host.sandboxId, vm.sandboxId]) {
      await unary(rt(), 'StopPodSandbox', { pod_sandbox_id: id });
      await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: id });
    }
    assert.deepEqual((await unary(rt(), 'ListPodSandbox', {})).items, []);
    assert.deepEqual((await unary(containerd.client.runtime, 'ListPodSandbox', {})).items, []);
    assert.ok(!existsSync(join(daemon.state, 'vms', vm.sandboxId)), 'the VM\'s run directory is gone');
  });
});
