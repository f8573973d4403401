import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon, unary, type RunningDaemon } from '../helpers/daemon.js';
import { pushTestImages, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { startContainerd, type TestContainerd } from '../helpers/containerd.js';
import { readCriLog, rejectsWith, sandboxConfig, waitFor } from '../helpers/cri.js';
import { hostNamespaces, removeAllPods, runPod as runPodIn } from './pods.js';
import { spdyCommand } from '../helpers/stream-clients.js';
import type { ContainerEventResponse__Output } from '../../src/cri/generated/runtime/v1/ContainerEventResponse.js';

/**
 * Pass-through to a co-installed containerd (issue 18), end to end: a real
 * containerd 1.6 with runc on a private socket, a real podvisord in front of
 * it, and every call through podvisord's CRI socket. No VM boots here (the
 * mixed node with VM pods is mixed-node.test.ts).
 */

/** Interface names in a /proc/net/dev text. */
function netDevNames(text: string): string[] {
  return text.split('\n').slice(2).map((l) => l.split(':')[0]!.trim()).filter(Boolean);
}

describe('pass-through of host-namespace pods to containerd', () => {
  let registry: TestRegistry;
  let containerd: TestContainerd;
  let daemon: RunningDaemon;
  let busybox: string;
  let logDir: string;
  const rt = () => daemon.client.runtime;
  const ctd = () => containerd.client.runtime;
  const hostNs = hostNamespaces;

  before(async () => {
    registry = await startRegistry();
    await pushTestImages(registry);
    busybox = `${registry.host}/podvisor-test/busybox:latest`;
    containerd = await startContainerd({
      registryHost: registry.host,
      pauseImage: `${registry.host}/podvisor-test/pause:latest`,
      cni: { bridge: 'pvt18br0', subnet: '10.218.7.0/24' },
    });
    logDir = mkdtempSync(join(tmpdir(), 'pvpt-logs-'));
    daemon = await startDaemon({
      logLevel: 'info',
      config: `[registry]\ninsecure = ["${registry.host}"]\n` +
        `[passthrough]\nendpoint = "${containerd.endpoint}"\nhost_namespaces = true\nhandlers = ["runc"]\n`,
    });
  });

  after(async () => {
    await removeAllPods(daemon?.client);
    await daemon?.dispose();
    await containerd?.stop();
    await registry?.stop();
    if (logDir) rmSync(logDir, { recursive: true, force: true });
  });

  const runPod = (name: string, extra: Record<string, unknown>, handler = '', command?: string[]) =>
    runPodIn(daemon.client, name, extra, { logRoot: logDir, cgroupParent: containerd.cgroupParent, image: busybox, handler, ...(command ? { command } : {}) });

  async function execSync(containerId: string, cmd: string[]) {
    const res = await unary(rt(), 'ExecSync', { container_id: containerId, cmd, timeout: 30 });
    return { out: res.stdout.toString('utf8'), err: res.stderr.toString('utf8'), code: res.exit_code };
  }

  test('a hostNetwork pod runs in containerd and sees the host\'s interfaces', async () => {
    const hostBefore = netDevNames(readFileSync('/proc/net/dev', 'utf8'));
    const { sandboxId, containerId } = await runPod('hostnet', hostNs('NODE'));
    const hostAfter = new Set(netDevNames(readFileSync('/proc/net/dev', 'utf8')));
    // containerd has it, and no VM was started for it
    const there = (await unary(ctd(), 'ListPodSandbox', { filter: { id: sandboxId } })).items;
    assert.equal(there.length, 1, 'the sandbox is containerd\'s');
    assert.ok(!existsSync(join(daemon.state, 'vms', sandboxId)), 'no VM run directory for a pass-through pod');
    const { out, code } = await execSync(containerId, ['cat', '/proc/net/dev']);
    assert.equal(code, 0);
    const seen = new Set(netDevNames(out));
    // Other tests on this machine add and remove taps; the interfaces there before and after must all be seen.
    const stable = hostBefore.filter((n) => hostAfter.has(n));
    assert.ok(stable.length > 1, `the host has interfaces besides lo: ${stable.join(', ')}`);
    for (const n of stable) assert.ok(seen.has(n), `the hostNetwork container sees host interface ${n} (it sees ${[...seen].join(', ')})`);
  });

  test('a hostPID pod sees host processes', async () => {
    const { containerId } = await runPod('hostpid', hostNs('POD', 'NODE'));
    const { out, code } = await execSync(containerId, ['cat', `/proc/${process.pid}/cmdline`]);
    assert.equal(code, 0, 'the test runner\'s own process is visible from the container');
    assert.match(out, /node/);
    const { out: ps } = await execSync(containerId, ['sh', '-c', 'ls /proc | grep -c "^[0-9]"']);
    assert.ok(Number(ps.trim()) > 20, `many host processes are visible, got ${ps.trim()}`);
  });

  test('a kata pod asking for host namespaces is refused with a reason, and nothing reaches containerd', async () => {
    const cfg = sandboxConfig('kata-hostnet', join(logDir, 'kata'), hostNs('NODE'));
    await rejectsWith(unary(rt(), 'RunPodSandbox', { config: cfg, runtime_handler: 'kata' }), 'INVALID_ARGUMENT',
      /host's network \(hostNetwork\) namespace with runtime handler "kata".*VMs.*list "kata" in \[passthrough\] handlers/);
    const there = (await unary(ctd(), 'ListPodSandbox', {})).items.filter((s) => s.metadata?.name === 'kata-hostnet');
    assert.deepEqual(there, []);
  });

  test('a pod whose handler is listed goes to containerd by name, with a pod IP from containerd\'s CNI network', async () => {
    const { sandboxId, containerId } = await runPod('byhandler', {}, 'runc');
    const st = (await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId })).status!;
    assert.equal(st.runtime_handler, 'runc');
    assert.match(st.network!.ip, /^10\.218\.7\./, 'containerd gave the pod an address on its bridge');
    const { out } = await execSync(containerId, ['cat', '/proc/net/dev']);
    assert.ok(!netDevNames(out).includes('pvt18br0'), 'the pod has its own network namespace');
  });

  test('list, status, stats, exec (sync and streaming) and logs of pass-through pods through podvisord', async () => {
    const { sandboxId, containerId } = await runPod('logs', hostNs('NODE'), '', ['sh', '-c', 'echo hello from runc; echo oops >&2; sleep 3600']);
    const pods = (await unary(rt(), 'ListPodSandbox', {})).items;
    assert.ok(pods.some((p) => p.id === sandboxId && p.state === 'SANDBOX_READY'));
    const byPrefix = (await unary(rt(), 'ListPodSandbox', { filter: { id: sandboxId.slice(0, 12) } })).items;
    assert.deepEqual(byPrefix.map((p) => p.id), [sandboxId]);
    const containers = (await unary(rt(), 'ListContainers', { filter: { pod_sandbox_id: sandboxId } })).containers;
    assert.deepEqual(containers.map((c) => c.id), [containerId]);
    const status = (await unary(rt(), 'ContainerStatus', { container_id: containerId.slice(0, 10) })).status!;
    assert.equal(status.id, containerId);
    assert.equal(status.state, 'CONTAINER_RUNNING');

    const stats = (await unary(rt(), 'ContainerStats', { container_id: containerId })).stats!;
    assert.equal(stats.attributes!.id, containerId);
    assert.ok(Number(stats.memory!.working_set_bytes!.value) > 0, 'containerd reports the container\'s memory');
    const all = (await unary(rt(), 'ListContainerStats', {})).stats;
    assert.ok(all.some((s) => s.attributes!.id === containerId));
    const podStats = (await unary(rt(), 'ListPodSandboxStats', {})).stats;
    assert.ok(podStats.some((s) => s.attributes!.id === sandboxId));

    const log = await waitFor('the container log', async () => {
      const path = status.log_path;
      if (!existsSync(path)) return undefined;
      const recs = await readCriLog(path);
      return recs.length >= 2 ? recs : undefined;
    });
    assert.deepEqual(log.map((r) => [r.stream, r.text]).sort(), [['stderr', 'oops'], ['stdout', 'hello from runc']]);

    const url = (await unary(rt(), 'Exec', { container_id: containerId, cmd: ['sh', '-c', 'echo streamed; exit 3'], stdout: true, stderr: true })).url;
    const res = await spdyCommand(url);
    assert.equal(res.stdout.toString(), 'streamed\n');
    assert.equal(res.exitCode, 3);
  });

  test('images: a pull for a host-network pod lands in containerd; the list shows each image once', async () => {
    const ref = `${registry.host}/podvisor-test/busybox:uid`;
    const cfg = sandboxConfig('pull', join(logDir, 'pull'), hostNs('NODE'));
    const pulled = (await unary(daemon.client.image, 'PullImage', { image: { image: ref }, sandbox_config: cfg })).image_ref;
    const inCtd = (await unary(containerd.client.image, 'ImageStatus', { image: { image: ref } })).image;
    assert.equal(inCtd?.id, pulled, 'containerd has the image');
    const list = (await unary(daemon.client.image, 'ListImages', {})).images;
    assert.equal(list.filter((i) => i.id === pulled).length, 1);
    assert.ok((await unary(daemon.client.image, 'ImageStatus', { image: { image: ref } })).image, 'ImageStatus finds it in either store');
    // the same image in podvisor's store too: still one entry
    await unary(daemon.client.image, 'PullImage', { image: { image: busybox } });
    const list2 = (await unary(daemon.client.image, 'ListImages', {})).images;
    const busyboxId = (await unary(daemon.client.image, 'ImageStatus', { image: { image: busybox } })).image!.id;
    assert.equal(list2.filter((i) => i.id === busyboxId).length, 1, 'busybox is in both stores and listed once');
  });

  test('images: ImageSpec.runtime_handler of a pass-through handler sends the pull to containerd', async () => {
    const ref = `${registry.host}/podvisor-test/busybox:user`;
    const id = (await unary(daemon.client.image, 'PullImage', { image: { image: ref, runtime_handler: 'runc' } })).image_ref;
    assert.equal((await unary(containerd.client.image, 'ImageStatus', { image: { image: ref } })).image?.id, id);
    assert.equal((await unary(daemon.client.image, 'ImageStatus', { image: { image: ref, runtime_handler: 'runc' } })).image?.id, id);
  });

  test('GetContainerEvents carries pass-through containers\' events (containerd 1.6 has no stream: podvisord polls it)', async () => {
    const events: ContainerEventResponse__Output[] = [];
    const stream = rt().GetContainerEvents({});
    stream.on('data', (e: ContainerEventResponse__Output) => events.push(e));
    stream.on('error', () => undefined); // cancelled below
    try {
      const { sandboxId, containerId } = await runPod('events', hostNs('NODE'));
      await unary(rt(), 'StopContainer', { container_id: containerId, timeout: 2 });
      const stopped = await waitFor('the stopped event', async () =>
        events.find((e) => e.container_id === containerId && e.container_event_type === 'CONTAINER_STOPPED_EVENT'), 60_000);
      assert.equal(stopped.pod_sandbox_status?.id, sandboxId, 'the event carries its pod\'s status');
      assert.equal(stopped.containers_statuses.find((c) => c.id === containerId)?.state, 'CONTAINER_EXITED');
    } finally {
      stream.cancel();
    }
  });

  test('Status reports both runtimes', async () => {
    const res = await unary(rt(), 'Status', { verbose: true });
    const cond = Object.fromEntries(res.status!.conditions.map((c) => [c.type, c]));
    assert.equal(cond.PassthroughRuntimeReady?.status, true);
    assert.equal(cond.PassthroughNetworkReady?.status, true, 'containerd has its CNI network');
    assert.ok(res.runtime_handlers.some((h) => h.name === 'runc'), 'the pass-through handler is listed');
    assert.ok(res.runtime_handlers.some((h) => h.name === 'kata'), 'the VM handlers are listed');
    assert.equal(JSON.parse(res.info.passthrough!).rules.endpoint, containerd.endpoint);
  });

  test('containerd gone: its pods answer UNAVAILABLE naming it; lists still answer; back again, all works', async () => {
    const { sandboxId, containerId } = await runPod('outage', hostNs('NODE'));
    await containerd.kill();
    await rejectsWith(unary(rt(), 'ContainerStatus', { container_id: containerId }), 'UNAVAILABLE', /pass-through runtime at unix:\/\/.* is unavailable/);
    await rejectsWith(unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId }), 'UNAVAILABLE', /pass-through runtime/);
    const listed = await unary(rt(), 'ListPodSandbox', {});
    assert.ok(!listed.items.some((p) => p.id === sandboxId), 'the list answers without containerd\'s pods');
    const st = await unary(rt(), 'Status', {});
    assert.equal(st.status!.conditions.find((c) => c.type === 'PassthroughRuntimeReady')?.status, false);
    await containerd.restart();
    await waitFor('containerd to answer through podvisord', async () => {
      try {
        return (await unary(rt(), 'ContainerStatus', { container_id: containerId })).status!.state === 'CONTAINER_RUNNING' ? true : undefined;
      } catch {
        return undefined;
      }
    });
  });

  test('removal: stop and remove through podvisord remove the pod from containerd and from the route table', async () => {
    const { sandboxId, containerId } = await runPod('removal', hostNs('NODE'));
    await unary(rt(), 'StopContainer', { container_id: containerId, timeout: 5 });
    await unary(rt(), 'RemoveContainer', { container_id: containerId });
    await unary(rt(), 'StopPodSandbox', { pod_sandbox_id: sandboxId });
    await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: sandboxId });
    await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: sandboxId }); // idempotent
    assert.deepEqual((await unary(ctd(), 'ListPodSandbox', { filter: { id: sandboxId } })).items, []);
    const routes = JSON.parse(readFileSync(join(daemon.state, 'passthrough', 'routes.json'), 'utf8'));
    assert.equal(routes.sandboxes[sandboxId], undefined);
    assert.equal(routes.containers[containerId], undefined);
    await rejectsWith(unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId }), 'NOT_FOUND');
  });
});
