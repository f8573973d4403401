import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { unary } from '../helpers/daemon.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import { containerConfig, containerState, readCriLog, rejectsWith, runToExit, sandboxConfig, waitContainerState, waitFor } from '../helpers/cri.js';

const MIB = 1024 * 1024;

/**
 * Resources and the newer CRI through the real socket, in one shared sandbox
 * VM: in-place container resize (memory and CPU in the guest cgroup), the
 * pod-level resize against the VM's fixed size, SupplementalGroupsPolicy,
 * stop signals, PSI and page faults in stats, and the cAdvisor-style metrics.
 */
describe('resources, stop signals, groups and metrics', () => {
  let env: PodTestEnv;
  let sandboxId: string;
  let sandboxCfg: ReturnType<typeof sandboxConfig>;
  const rt = () => env.daemon.client.runtime;

  async function startLong(name: string, script: string, extra: Record<string, unknown> = {}): Promise<string> {
    const { container_id } = await unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, config: containerConfig(name, env.busybox, ['sh', '-c', script], extra), sandbox_config: sandboxCfg,
    });
    await unary(rt(), 'StartContainer', { container_id });
    return container_id;
  }

  async function exec(id: string, cmd: string): Promise<string> {
    const r = await unary(rt(), 'ExecSync', { container_id: id, cmd: ['sh', '-c', cmd], timeout: 60 });
    assert.equal(r.exit_code, 0, `${cmd}: ${r.stderr.toString()}`);
    return r.stdout.toString().trim();
  }

  before(async () => {
    // One VM for the whole file, on a shared and loaded machine: give its boot room.
    env = await startPodTestEnv({}, '[daemon]\nboot_timeout_seconds = 900\n');
    await env.pull(env.busybox);
    sandboxCfg = sandboxConfig('resources-e2e', join(env.dir, 'logs'), {
      linux: { resources: { memory_limit_in_bytes: String(256 * MIB), cpu_quota: '100000', cpu_period: '100000' } },
    });
    sandboxId = (await unary(rt(), 'RunPodSandbox', { config: sandboxCfg })).pod_sandbox_id;
  });

  after(async () => {
    await env?.dispose();
  });

  test('a memory limit lowered on a running container takes effect: a process over it is OOMKilled', async () => {
    const id = await startLong('mem', 'while [ ! -e /tmp/go ]; do sleep 0.2; done; head -c 96m /dev/zero | tail >/dev/null; echo "reader=$?"', {
      linux: { resources: { memory_limit_in_bytes: String(200 * MIB) } },
    });
    const before = await containerState(env.daemon.client, id);
    assert.equal(before.resources?.linux?.memory_limit_in_bytes, String(200 * MIB));
    const startedAt = before.started_at;

    await unary(rt(), 'UpdateContainerResources', { container_id: id, linux: { memory_limit_in_bytes: String(32 * MIB) } });
    const after = await containerState(env.daemon.client, id);
    assert.equal(after.state, 'CONTAINER_RUNNING', 'the container was not restarted');
    assert.equal(after.started_at, startedAt);
    assert.equal(after.resources?.linux?.memory_limit_in_bytes, String(32 * MIB), 'ContainerStatus reports the limit in force');
    assert.equal(await exec(id, 'cat /sys/fs/cgroup/memory.max'), String(32 * MIB), 'the guest cgroup has the new limit');

    await exec(id, 'touch /tmp/go');
    const exited = await waitContainerState(env.daemon.client, id, 'CONTAINER_EXITED', 120_000);
    assert.equal(exited.reason, 'OOMKilled', `exit ${exited.exit_code} ${exited.reason} ${exited.message}`);
    const log = (await readCriLog(exited.log_path)).map((l) => l.text);
    assert.ok(log.includes('reader=137'), `the 96 MiB reader was killed (SIGKILL from the OOM killer): ${log.join(' | ')}`);
  });

  test('a cpu quota change shows in the guest cgroup; a created container starts with its update', async () => {
    const id = await startLong('cpu', 'sleep 3600');
    assert.equal(await exec(id, 'cat /sys/fs/cgroup/cpu.max'), 'max 100000');
    await unary(rt(), 'UpdateContainerResources', { container_id: id, linux: { cpu_quota: '25000', cpu_period: '50000', cpu_shares: '512' } });
    assert.equal(await exec(id, 'cat /sys/fs/cgroup/cpu.max'), '25000 50000');
    const weight = Number(await exec(id, 'cat /sys/fs/cgroup/cpu.weight'));
    assert.ok(weight > 1 && weight < 100, `cpu.weight ${weight} for 512 shares (1024 shares is 100)`);
    const st = await containerState(env.daemon.client, id);
    assert.equal(st.resources?.linux?.cpu_quota, '25000');
    assert.equal(st.resources?.linux?.cpu_period, '50000');
    assert.equal(st.resources?.linux?.cpu_shares, '512');

    // Lifting the limit again.
    await unary(rt(), 'UpdateContainerResources', { container_id: id, linux: { cpu_quota: '-1' } });
    assert.match(await exec(id, 'cat /sys/fs/cgroup/cpu.max'), /^max /);

    // A container created but not started gets the update in its spec.
    const { container_id: later } = await unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, config: containerConfig('cpu-later', env.busybox, ['sleep', '3600']), sandbox_config: sandboxCfg,
    });
    await unary(rt(), 'UpdateContainerResources', { container_id: later, linux: { cpu_quota: '30000', cpu_period: '100000' } });
    await unary(rt(), 'StartContainer', { container_id: later });
    assert.equal(await exec(later, 'cat /sys/fs/cgroup/cpu.max'), '30000 100000');

    for (const c of [id, later]) await unary(rt(), 'StopContainer', { container_id: c, timeout: 0 });
    await rejectsWith(unary(rt(), 'UpdateContainerResources', { container_id: id, linux: { cpu_quota: '10000' } }), 'FAILED_PRECONDITION', /EXITED/);
    await rejectsWith(unary(rt(), 'UpdateContainerResources', { container_id: 'nope', linux: { cpu_quota: '10000' } }), 'NOT_FOUND');
  });

  test('UpdatePodSandboxResources: accepted within the VM booted size, refused beyond it naming both sizes', async () => {
    await unary(rt(), 'UpdatePodSandboxResources', {
      pod_sandbox_id: sandboxId, resources: { memory_limit_in_bytes: String(128 * MIB), cpu_quota: '50000', cpu_period: '100000' },
    });
    const msg = await rejectsWith(unary(rt(), 'UpdatePodSandboxResources', {
      pod_sandbox_id: sandboxId, resources: { memory_limit_in_bytes: String(2048 * MIB), cpu_quota: '300000', cpu_period: '100000' },
    }), 'FAILED_PRECONDITION', /cannot grow/);
    assert.match(msg, /booted with 1 vCPUs and \d+ MiB/);
    const status = await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId, verbose: true });
    assert.equal(status.status?.state, 'SANDBOX_READY');
  });

  test('SupplementalGroupsPolicy: Merge adds the image\'s /etc/group memberships, Strict drops them; ContainerStatus.user says which', async () => {
    const run = async (name: string, policy: string) => {
      const r = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig(name, env.busybox, ['id', '-G'], {
        linux: { security_context: { run_as_user: { value: '1000' }, supplemental_groups: ['2000'], supplemental_groups_policy: policy } },
      }));
      return { groups: r.log.map((l) => l.text).join(' ').split(/\s+/).map(Number).sort((a, b) => a - b), user: r.status.user?.linux };
    };
    const merge = await run('groups-merge', 'Merge');
    assert.deepEqual(merge.groups, [50, 1000, 2000], 'user is in staff (50) in the image\'s /etc/group');
    const strict = await run('groups-strict', 'Strict');
    assert.deepEqual(strict.groups, [1000, 2000]);
    assert.equal(strict.user?.uid, '1000');
    assert.equal(strict.user?.gid, '1000');
    assert.deepEqual([...(strict.user?.supplemental_groups ?? [])].map(Number).sort((a, b) => a - b), [1000, 2000]);
    assert.deepEqual([...(merge.user?.supplemental_groups ?? [])].map(Number).sort((a, b) => a - b), [50, 1000, 2000]);
    const status = await unary(rt(), 'Status', {});
    assert.equal(status.features?.supplemental_groups_policy, true);
    for (const h of status.runtime_handlers) assert.equal(h.features?.user_namespaces, true, h.name);
  });

  test('ContainerConfig.stop_signal is delivered by StopContainer and reported in ContainerStatus', async () => {
    const id = await startLong('stopsig', 'trap "echo got-usr1; exit 7" USR1; echo ready; while true; do sleep 0.1; done', { stop_signal: 'SIGUSR1' });
    const st = await containerState(env.daemon.client, id);
    assert.equal(st.stop_signal, 'SIGUSR1');
    await waitFor('the trap to be set', async () => ((await readCriLog(st.log_path)).some((l) => l.text === 'ready') ? true : undefined));
    await unary(rt(), 'StopContainer', { container_id: id, timeout: 30 });
    const exited = await containerState(env.daemon.client, id);
    assert.equal(exited.exit_code, 7, 'the container ended through its USR1 trap, not SIGKILL');
    assert.ok((await readCriLog(exited.log_path)).some((l) => l.text === 'got-usr1'));
    // Without a stop_signal the image's (busybox names none) applies: SIGTERM.
    const plain = await startLong('stopsig-default', 'sleep 3600');
    assert.equal((await containerState(env.daemon.client, plain)).stop_signal, 'SIGTERM');
    await unary(rt(), 'StopContainer', { container_id: plain, timeout: 0 });
  });

  test('a hostUsers: false container runs in a user namespace with kubelet\'s mappings; its root is not the guest\'s', async () => {
    const range = { host_id: 65536 * 3, container_id: 0, length: 65536 };
    const r = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('userns', env.busybox, ['sh', '-c',
      'id -u; cat /proc/self/uid_map /proc/self/gid_map; echo x > /tmp/mine && stat -c "tmp=%u" /tmp/mine; stat -c "etc=%u" /etc/passwd; ' +
      'mkdir /newdir 2>/dev/null && echo "root-write=ok" || echo "root-write=denied"'], {
      linux: { security_context: { namespace_options: { userns_options: { mode: 'POD', uids: [range], gids: [range] } } } },
    }));
    const out = r.log.map((l) => l.text);
    assert.equal(r.status.exit_code, 0, out.join('\n'));
    assert.equal(out[0], '0', 'root inside the container');
    const maps = out.filter((l) => /^\s*0\s+196608\s+65536$/.test(l));
    assert.equal(maps.length, 2, `uid_map and gid_map are kubelet's range: ${out.join(' | ')}`);
    assert.ok(out.includes('tmp=0'), 'files it makes are its own');
    assert.ok(out.includes('etc=65534'), `the image's files (guest root) are unmapped, shown as nobody: ${out.join(' | ')}`);
    assert.ok(out.includes('root-write=denied'), 'container root cannot write directories owned by the guest\'s root');
    await rejectsWith(unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg,
      config: containerConfig('userns-bad', env.busybox, ['true'], {
        linux: { security_context: { namespace_options: { userns_options: { mode: 'POD', uids: [], gids: [range] } } } },
      }),
    }), 'INVALID_ARGUMENT', /uid mappings/);
  });

  test('PSI, page faults and the metrics series come back with values from the guest', async () => {
    const id = await startLong('busy', 'while true; do cat /bin/busybox >/dev/null; done');
    // The busy loop stalls the shared vCPU sooner or later: wait until a stall is counted, not a fixed 3 s.
    // Stats wait at most 2 s for a guest; on a loaded TCG host an ask can miss that.
    const stats = await waitFor('container stats counting a CPU stall', async () => {
      try {
        const s = (await unary(rt(), 'ContainerStats', { container_id: id })).stats;
        return s && Number(s.cpu?.psi?.Some?.Total) > 0 ? s : undefined;
      } catch {
        return undefined;
      }
    }, 120_000);
    const cpuPsi = stats?.cpu?.psi;
    assert.ok(cpuPsi?.Some, 'cpu PSI present');
    assert.ok(Number(cpuPsi.Some.Total) > 0, `a busy loop on a shared vCPU stalls: ${JSON.stringify(cpuPsi)}`);
    assert.ok(stats?.memory?.psi?.Some && stats.memory.psi.Full, 'memory PSI some and full');
    assert.ok(stats?.io?.psi?.Some, 'io PSI present');
    assert.ok(Number(stats?.memory?.page_faults?.value) > 0, 'page faults counted in the guest');
    assert.ok(stats?.memory?.major_page_faults, 'major page faults reported');

    const pod = await waitFor('pod stats', async () => {
      try {
        return (await unary(rt(), 'PodSandboxStats', { pod_sandbox_id: sandboxId })).stats?.linux ?? undefined;
      } catch {
        return undefined;
      }
    });
    assert.ok(Number(pod?.cpu?.psi?.Some?.Total) >= Number(cpuPsi.Some.Total), 'the pod cgroup contains the container');
    assert.ok(Number(pod?.memory?.page_faults?.value) >= Number(stats?.memory?.page_faults?.value));
    assert.ok(pod?.io?.psi?.Some);

    const { descriptors } = await unary(rt(), 'ListMetricDescriptors', {});
    const names = new Set(descriptors.map((d) => d.name));
    for (const n of ['container_cpu_usage_seconds_total', 'container_memory_working_set_bytes', 'container_pressure_cpu_waiting_seconds_total', 'container_memory_page_faults_total']) {
      assert.ok(names.has(n), n);
    }
    // A pod whose guest misses the stats deadline is left out of one answer; ask until it is in.
    const mine = await waitFor('the pod\'s metrics', async () => {
      const { pod_metrics } = await unary(rt(), 'ListPodSandboxMetrics', {});
      const m = pod_metrics.find((p) => p.pod_sandbox_id === sandboxId);
      return m?.container_metrics.some((c) => c.container_id === id) ? m : undefined;
    });
    const value = (metrics: typeof mine.metrics, name: string) => Number(metrics.find((m) => m.name === name)?.value?.value);
    assert.ok(value(mine.metrics, 'container_memory_usage_bytes') > 0);
    const busy = mine.container_metrics.find((c) => c.container_id === id);
    assert.ok(busy, 'the busy container has metrics');
    assert.ok(value(busy.metrics, 'container_memory_working_set_bytes') > 0);
    assert.ok(value(busy.metrics, 'container_memory_page_faults_total') > 0);
    assert.ok(value(busy.metrics, 'container_processes') >= 1);
    const labels = descriptors.find((d) => d.name === 'container_processes')!.label_keys;
    const sample = busy.metrics.find((m) => m.name === 'container_processes')!;
    assert.equal(sample.label_values[labels.indexOf('container')], 'busy');
    assert.equal(sample.label_values[labels.indexOf('pod')], 'resources-e2e');
    await unary(rt(), 'StopContainer', { container_id: id, timeout: 0 });
  });
});
