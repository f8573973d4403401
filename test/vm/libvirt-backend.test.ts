import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseSubIdRange, QemuUsers } from '../../src/vm/confinement.js';
import { cgroupLimits } from '../helpers/cgroup-limits.js';
import { unary } from '../helpers/daemon.js';
import { libvirtUnavailable } from '../helpers/libvirtd.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import { containerConfig, containerState, runToExit, sandboxConfig } from '../helpers/cri.js';

/**
 * The libvirt VM backend with a real libvirtd (the test's own, on private sockets and
 * directories): the pod VM is a libvirt domain named after the sandbox, and neither a
 * podvisord restart nor a libvirtd restart loses the pod. Each pod's QEMU runs as its own
 * unprivileged uid (libvirt's per-domain DAC label) inside the QEMU backend's memory and
 * pids limits, and reaches nothing of another pod's. The full pod lifecycle suite runs
 * on this backend with `PODVISOR_TEST_VM_BACKEND=libvirt` (test/pod/lifecycle.test.ts).
 */
const skip = await libvirtUnavailable();

describe('libvirt VM backend', { skip }, () => {
  let env: PodTestEnv;
  let sandboxId: string;
  let sandboxCfg: ReturnType<typeof sandboxConfig>;
  let sleeper: string;
  let qemuPid: number;
  let uidA: number;
  let secondId: string;
  let secondPid: number;
  let uidB: number;
  const rt = () => env.daemon.client.runtime;
  const domains = () => env.libvirtd!.virsh('list', '--name').split('\n').map((l) => l.trim()).filter(Boolean);
  const vmInfo = async (id = sandboxId) => JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: id, verbose: true })).info.info!).vm;
  const ids = (pid: number) => {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(status, /^Uid:\s+(\d+)\s+\1\s+\1\s+\1$/m, 'real, effective, saved and fs uid are all one');
    return { uid: Number(/^Uid:\s+(\d+)/m.exec(status)![1]), gid: Number(/^Gid:\s+(\d+)/m.exec(status)![1]) };
  };
  /** A shell as `uid`: what an escaped QEMU of that uid could do. */
  const shellAs = (who: { uid: number; gid: number }, cmd: string) => spawnSync('sh', ['-c', cmd], { uid: who.uid, gid: who.gid, encoding: 'utf8', timeout: 30_000 });
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

  test('each pod\'s QEMU runs as its own unprivileged uid from podvisor\'s range, inside the memory and pids limits', async () => {
    // A second pod beside the first (two VMs at once is this host's limit).
    const cfgB = sandboxConfig('lv-b', join(env.dir, 'logs', 'lv-b'));
    secondId = (await unary(rt(), 'RunPodSandbox', { config: cfgB, runtime_handler: 'kata' })).pod_sandbox_id;
    secondPid = (await vmInfo(secondId)).pid;
    const range = parseSubIdRange(readFileSync('/etc/subuid', 'utf8'), 'podvisor-qemu')!;
    const seen: number[] = [];
    for (const [id, pid] of [[sandboxId, qemuPid], [secondId, secondPid]] as const) {
      const { uid, gid } = ids(pid);
      assert.ok(uid >= range.start && uid < range.start + range.count, `QEMU uid ${uid} is in podvisor-qemu's range ${range.start}+${range.count}`);
      assert.match(env.libvirtd!.virsh('dumpxml', `podvisor-${id}`), new RegExp(`<seclabel type='static' model='dac' relabel='no'>\\s*<label>\\+${uid}:\\+${gid}</label>`));
      const limits = cgroupLimits(readFileSync(`/proc/${pid}/cgroup`, 'utf8'));
      // The default VM: 512 MiB of guest RAM plus the configured QEMU overhead (256 MiB), as on the QEMU backend.
      assert.equal(limits.memoryBytes, (512 + 256) * 1024 * 1024);
      assert.equal(limits.pidsMax, 256);
      assert.ok(limits.pidsNow > 1 && limits.memoryPeak > 0, 'the QEMU is counted in those cgroups');
      assert.ok(readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('tcg,tb-size=32'), 'the TCG cache is tcg_tb_size_mib');
      console.log(`# pod ${id.slice(0, 8)}: QEMU pid ${pid} uid ${uid} gid ${gid}, memory limit ${limits.memoryBytes / 1048576} MiB (peak ${Math.round(limits.memoryPeak / 1048576)} MiB), pids.max ${limits.pidsMax} (now ${limits.pidsNow})`);
      seen.push(uid);
    }
    [uidA, uidB] = seen as [number, number];
    assert.notEqual(uidA, uidB, 'two pods, two uids');
  });

  test('a pod\'s QEMU uid reaches nothing of another pod\'s: run directory, console, QMP socket, disks, process', () => {
    const b = ids(secondPid);
    const runA = join(env.daemon.state, 'vms', sandboxId);
    const disksA = (JSON.parse(readFileSync(join(runA, 'disks.json'), 'utf8')) as Array<{ path: string }>).map((d) => d.path);
    assert.ok(disksA.length > 0, 'the first pod has its image disk plugged');
    // The shell really is that uid: it may signal its own QEMU.
    assert.equal(shellAs(b, `kill -0 ${secondPid}`).status, 0, 'a uid signals its own QEMU');
    const attempts = [
      `ls ${runA}`, `cat ${join(runA, 'console.log')}`, `test -S ${join(runA, 'q', 'qmp.sock')} || cat ${join(runA, 'q', 'qmp.sock')}`,
      ...disksA.map((d) => `head -c 1 ${d} >/dev/null`),
      `kill -0 ${qemuPid}`, `head -c 1 /proc/${qemuPid}/environ >/dev/null`,
    ];
    for (const cmd of attempts) {
      const r = shellAs(b, cmd);
      assert.notEqual(r.status, 0, `uid ${b.uid} ran: ${cmd}`);
      assert.match(r.stderr, /Permission denied|Operation not permitted/, `${cmd}: ${r.stderr}`);
    }
    // Root reaches them: the paths are real.
    for (const cmd of attempts.slice(0, -2)) assert.equal(spawnSync('sh', ['-c', cmd]).status, 0, `root: ${cmd}`);
  });

  test('a podvisord restart loses no pod: the same domain and QEMU, the container still runs', async () => {
    await env.killDaemon();
    await env.startDaemon();
    const [s] = (await unary(rt(), 'ListPodSandbox', {})).items;
    assert.equal(s?.state, 'SANDBOX_READY');
    assert.equal((await vmInfo()).pid, qemuPid);
    assert.equal((await containerState(env.daemon.client, sleeper)).state, 'CONTAINER_RUNNING');
    await execEcho('after-podvisord-restart');
    // The running QEMUs keep their uids, and an allocator that starts now (as the restarted one
    // did) counts them as taken: one whose whole range is the first pod's uid has none to give.
    assert.equal(ids(qemuPid).uid, uidA);
    const dir = mkdtempSync(join(env.dir, 'subid-'));
    for (const f of ['subuid', 'subgid']) writeFileSync(join(dir, f), `podvisor-qemu:${uidA}:1\n`);
    assert.throws(() => new QemuUsers('podvisor-qemu', { subuid: join(dir, 'subuid'), subgid: join(dir, 'subgid') }).allocate('another'), /all 1 QEMU uids .* are in use/);
    // The second pod goes; the restarted daemon gives its uid back and reuses none still running.
    await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: secondId });
    assert.ok(!existsSync(`/proc/${secondPid}`));
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
    assert.notEqual(ids((await vmInfo(second)).pid).uid, uidA, 'a new pod does not get the running pod\'s uid');
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
