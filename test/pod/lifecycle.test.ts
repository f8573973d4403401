import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { unary } from '../helpers/daemon.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import {
  containerConfig, containerState, readCriLog, rejectsWith, runToExit, sandboxConfig, waitFor,
} from '../helpers/cri.js';
import type { ContainerEventResponse__Output } from '../../src/cri/generated/runtime/v1/ContainerEventResponse.js';

/**
 * The pod and container lifecycle through the real CRI socket: one podvisord,
 * one real registry, and one sandbox VM shared by the tests in this file.
 */
describe('pod and container lifecycle', () => {
  let env: PodTestEnv;
  let sandboxId: string;
  let sandboxCfg: ReturnType<typeof sandboxConfig>;
  let logDir: string;
  const rt = () => env.daemon.client.runtime;

  before(async () => {
    env = await startPodTestEnv();
    await env.pull(env.busybox);
    logDir = join(env.dir, 'logs', 'web');
    sandboxCfg = sandboxConfig('web', logDir, {
      dns_config: { servers: ['10.96.0.10'], searches: ['e2e.svc.cluster.local'], options: ['ndots:5'] },
      linux: { sysctls: { 'net.ipv4.ip_unprivileged_port_start': '80' } },
    });
    sandboxId = (await unary(rt(), 'RunPodSandbox', { config: sandboxCfg })).pod_sandbox_id;
  });

  after(async () => {
    await env?.dispose();
  });

  test('the sandbox is READY with its metadata, and verbose status names the VM', async () => {
    assert.match(sandboxId, /^[0-9a-f]{64}$/);
    const res = await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId.slice(0, 12), verbose: true });
    const st = res.status!;
    assert.equal(st.id, sandboxId);
    assert.equal(st.state, 'SANDBOX_READY');
    assert.deepEqual(st.metadata, { name: 'web', namespace: 'e2e', uid: 'uid-web', attempt: 0 });
    assert.deepEqual(st.labels, { app: 'web' });
    assert.equal(st.runtime_handler, '');
    assert.ok(BigInt(st.created_at) > 0n);
    assert.equal(st.network!.ip, '', 'loopback only: no pod IP yet');
    const info = JSON.parse(res.info.info!);
    assert.ok(Number.isInteger(info.vm.pid) && info.vm.pid > 0);
    assert.ok(existsSync(`/proc/${info.vm.pid}`), 'the QEMU process exists');
    assert.match(info.vm.accelerator, /^(tcg|kvm)$/);
    assert.match(info.network.note, /loopback/);
  });

  test('ListPodSandbox filters by id prefix, state and labels', async () => {
    const all = (await unary(rt(), 'ListPodSandbox', {})).items;
    assert.ok(all.some((s) => s.id === sandboxId));
    const byId = (await unary(rt(), 'ListPodSandbox', { filter: { id: sandboxId.slice(0, 10) } })).items;
    assert.deepEqual(byId.map((s) => s.id), [sandboxId]);
    const ready = (await unary(rt(), 'ListPodSandbox', { filter: { state: { state: 'SANDBOX_READY' } } })).items;
    assert.ok(ready.some((s) => s.id === sandboxId));
    const notReady = (await unary(rt(), 'ListPodSandbox', { filter: { state: { state: 'SANDBOX_NOTREADY' } } })).items;
    assert.ok(!notReady.some((s) => s.id === sandboxId));
    assert.deepEqual((await unary(rt(), 'ListPodSandbox', { filter: { label_selector: { app: 'nope' } } })).items, []);
    assert.equal((await unary(rt(), 'ListPodSandbox', { filter: { label_selector: { app: 'web' } } })).items[0]?.id, sandboxId);
  });

  test('a duplicate sandbox name is AlreadyExists and boots no second VM', async () => {
    await rejectsWith(unary(rt(), 'RunPodSandbox', { config: sandboxCfg }), 'ALREADY_EXISTS', new RegExp(sandboxId));
    const same = (await unary(rt(), 'ListPodSandbox', { filter: { label_selector: { app: 'web' } } })).items;
    assert.equal(same.length, 1);
  });

  test('what a VM cannot do, and unknown handlers, are refused with a reason', async () => {
    await rejectsWith(unary(rt(), 'RunPodSandbox', { config: sandboxConfig('x', logDir), runtime_handler: 'gvisor' }), 'INVALID_ARGUMENT', /unknown runtime handler "gvisor"/);
    const hostNet = sandboxConfig('hostnet', logDir, { linux: { security_context: { namespace_options: { network: 'NODE' } } } });
    await rejectsWith(unary(rt(), 'RunPodSandbox', { config: hostNet }), 'INVALID_ARGUMENT', /hostNetwork.*own VM/);
    await rejectsWith(unary(rt(), 'RunPodSandbox', { config: { metadata: { name: 'x' } } }), 'INVALID_ARGUMENT', /namespace/);
  });

  test('CreateContainer with an image that is not on the node is NotFound', async () => {
    await rejectsWith(unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg,
      config: containerConfig('missing', `${env.registry.host}/podvisor-test/nothing:here`, ['true']),
    }), 'NOT_FOUND', /not present on this node/);
    await rejectsWith(unary(rt(), 'CreateContainer', {
      pod_sandbox_id: 'f'.repeat(64), sandbox_config: sandboxCfg, config: containerConfig('x', env.busybox, ['true']),
    }), 'NOT_FOUND');
  });

  test('a container runs to completion: Completed, exit code 0, output in the kubelet log format', async () => {
    const r = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('hello', env.busybox, ['sh', '-c', 'echo hello; echo oops >&2; printf partial']));
    assert.equal(r.status.exit_code, 0);
    assert.equal(r.status.reason, 'Completed');
    assert.equal(r.status.log_path, join(logDir, 'hello.log'));
    assert.ok(BigInt(r.status.started_at) >= BigInt(r.status.created_at));
    assert.ok(BigInt(r.status.finished_at) >= BigInt(r.status.started_at));
    assert.match(r.status.image_ref, /podvisor-test\/busybox@sha256:[0-9a-f]{64}$/);
    assert.match(r.status.image_id, /^sha256:[0-9a-f]{64}$/);
    assert.deepEqual(r.log.map((l) => [l.stream, l.tag, l.text]).sort(), [['stderr', 'F', 'oops'], ['stdout', 'F', 'hello'], ['stdout', 'F', 'partial']]);
    for (const l of r.log) assert.ok(!Number.isNaN(Date.parse(l.time)));
  });

  test('a failing container is Error with its exit code', async () => {
    const r = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('fail', env.busybox, ['sh', '-c', 'exit 3']));
    assert.equal(r.status.exit_code, 3);
    assert.equal(r.status.reason, 'Error');
  });

  test('command, args, env, working dir and user follow kubelet\'s rules', async () => {
    const r = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('env', env.busybox, ['sh', '-c'], {
      args: ['echo "A=$A B=$B H=$HOSTNAME"; pwd; id -u; id -g; cat /etc/resolv.conf; cat /etc/hostname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start'],
      envs: [{ key: 'A', value: 'one' }, { key: 'B', value: 'x=y' }],
      working_dir: '/tmp',
      linux: { security_context: { run_as_user: { value: 1000 }, run_as_group: { value: 1001 } } },
    }));
    const out = r.log.map((l) => l.text);
    assert.equal(r.status.exit_code, 0, out.join('\n'));
    assert.deepEqual(out.slice(0, 4), ['A=one B=x=y H=web', '/tmp', '1000', '1001']);
    assert.ok(out.includes('nameserver 10.96.0.10'));
    assert.ok(out.includes('search e2e.svc.cluster.local'));
    assert.ok(out.includes('web'));
    assert.equal(out.at(-1), '80', 'the sandbox sysctl is set in the VM');
  });

  test('a container over its memory limit is OOMKilled', async () => {
    const r = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('hog', env.busybox,
      ['sh', '-c', 'x=$(head -c 300000000 /dev/zero | tr "\\0" a); echo survived'], {
        linux: { resources: { memory_limit_in_bytes: 32 * 1024 * 1024 } },
      }), 240_000); // TCG on a loaded host: alone this took 62 s (qemu) and 72 s (libvirt) at load 12, past the default 60 s wait
    assert.equal(r.status.reason, 'OOMKilled');
    assert.notEqual(r.status.exit_code, 0);
    assert.ok(!r.log.some((l) => l.text === 'survived'));
  });

  test('the image USER applies when the config names no user', async () => {
    await env.pull(`${env.registry.host}/podvisor-test/busybox:uid`);
    const r = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('imguser', `${env.registry.host}/podvisor-test/busybox:uid`, ['id', '-u']));
    assert.deepEqual(r.log.map((l) => l.text), ['1234']);
  });

  test('user names resolve against the image\'s own /etc/passwd (image USER and run_as_username)', async () => {
    const userImage = `${env.registry.host}/podvisor-test/busybox:user`;
    await env.pull(userImage);
    const script = 'id -un; grep "^www-data:" /etc/passwd | cut -d: -f3; id -u';
    const fromImage = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('named', userImage, ['sh', '-c', script]));
    const [name, passwdUid, uid] = fromImage.log.map((l) => l.text);
    assert.equal(name, 'www-data');
    assert.equal(uid, passwdUid);
    const fromConfig = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('named2', env.busybox, ['id', '-un'], {
      linux: { security_context: { run_as_username: 'nobody' } },
    }));
    assert.deepEqual(fromConfig.log.map((l) => l.text), ['nobody']);
    await rejectsWith(unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg,
      config: containerConfig('ghost', env.busybox, ['true'], { linux: { security_context: { run_as_username: 'ghost' } } }),
    }), 'INVALID_ARGUMENT', /"ghost" is not in the image's \/etc\/passwd/);
  });

  test('lines longer than 16 KiB are split into P records', async () => {
    const r = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('long', env.busybox, ['sh', '-c', 'head -c 40000 /dev/zero | tr "\\0" x; echo; echo short']));
    assert.deepEqual(r.log.map((l) => [l.tag, l.text.length]), [['P', 16384], ['P', 16384], ['F', 40000 - 32768], ['F', 5]]);
  });

  describe('a running container', () => {
    let id: string;
    before(async () => {
      ({ container_id: id } = await unary(rt(), 'CreateContainer', {
        pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg,
        // PID 1 of a container ignores SIGTERM unless it handles it, so this one does.
        config: containerConfig('server', env.busybox, ['sh', '-c', 'trap "echo bye; exit 0" TERM; i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.1; done']),
      }));
      assert.equal((await containerState(env.daemon.client, id)).state, 'CONTAINER_CREATED');
      await unary(rt(), 'StartContainer', { container_id: id });
    });

    test('is RUNNING and listed with filters', async () => {
      const st = await containerState(env.daemon.client, id);
      assert.equal(st.state, 'CONTAINER_RUNNING');
      const list = (await unary(rt(), 'ListContainers', { filter: { pod_sandbox_id: sandboxId, state: { state: 'CONTAINER_RUNNING' } } })).containers;
      assert.deepEqual(list.map((c) => c.id), [id]);
      const byLabel = (await unary(rt(), 'ListContainers', { filter: { label_selector: { name: 'server' } } })).containers;
      assert.deepEqual(byLabel.map((c) => c.id), [id]);
      const byPrefix = (await unary(rt(), 'ListContainers', { filter: { id: id.slice(0, 8) } })).containers;
      assert.equal(byPrefix[0]?.pod_sandbox_id, sandboxId);
      await rejectsWith(unary(rt(), 'StartContainer', { container_id: id }), 'FAILED_PRECONDITION', /RUNNING/);
    });

    test('a second container with the same name is AlreadyExists', async () => {
      await rejectsWith(unary(rt(), 'CreateContainer', {
        pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg, config: containerConfig('server', env.busybox, ['true']),
      }), 'ALREADY_EXISTS');
    });

    test('ExecSync returns output and exit code, and times out', async () => {
      const ok = await unary(rt(), 'ExecSync', { container_id: id, cmd: ['sh', '-c', 'echo out; echo err >&2; exit 4'], timeout: 30 });
      assert.equal(ok.stdout.toString(), 'out\n');
      assert.equal(ok.stderr.toString(), 'err\n');
      assert.equal(ok.exit_code, 4);
      await rejectsWith(unary(rt(), 'ExecSync', { container_id: id, cmd: ['sleep', '30'], timeout: 1 }), 'DEADLINE_EXCEEDED', /timed out/);
    });

    test('stats come from the guest cgroups', async () => {
      const s = (await unary(rt(), 'ContainerStats', { container_id: id })).stats!;
      assert.equal(s.attributes!.id, id);
      assert.ok(BigInt(s.cpu!.usage_core_nano_seconds!.value) > 0n);
      assert.ok(BigInt(s.memory!.working_set_bytes!.value) > 0n);
      const list = (await unary(rt(), 'ListContainerStats', { filter: { pod_sandbox_id: sandboxId } })).stats;
      assert.deepEqual(list.map((x) => x.attributes!.id), [id]);
      const second = (await unary(rt(), 'ContainerStats', { container_id: id })).stats!;
      assert.ok(BigInt(second.cpu!.usage_core_nano_seconds!.value) >= BigInt(s.cpu!.usage_core_nano_seconds!.value));
      const pod = (await unary(rt(), 'PodSandboxStats', { pod_sandbox_id: sandboxId })).stats!;
      assert.equal(pod.attributes!.id, sandboxId);
      assert.ok(BigInt(pod.linux!.cpu!.usage_core_nano_seconds!.value) > 0n);
      assert.ok(BigInt(pod.linux!.process!.process_count!.value) >= 1n);
      assert.deepEqual(pod.linux!.containers.map((c) => c.attributes!.id), [id]);
      const pods = (await unary(rt(), 'ListPodSandboxStats', { filter: { id: sandboxId } })).stats;
      assert.equal(pods.length, 1);
    });

    test('ReopenContainerLog after a rotation loses no line', async () => {
      const path = join(logDir, 'server.log');
      await waitFor('some log lines', async () => ((await readCriLog(path)).length >= 5 ? true : undefined));
      await rename(path, `${path}.1`);
      await unary(rt(), 'ReopenContainerLog', { container_id: id });
      await waitFor('lines in the new file', async () => ((await readCriLog(path)).length >= 5 ? true : undefined));
      const lines = [...await readCriLog(`${path}.1`), ...await readCriLog(path)].map((l) => l.text);
      const ticks = lines.filter((t) => t !== 'bye').map((t) => Number(/^tick (\d+)$/.exec(t)?.[1]));
      assert.ok(ticks.every((n) => Number.isInteger(n)), lines.join('\n'));
      assert.deepEqual(ticks, ticks.map((_, i) => i), 'consecutive ticks across both files');
    });

    test('StopContainer with a timeout: SIGTERM first; RemoveContainer then forgets it', async () => {
      await unary(rt(), 'StopContainer', { container_id: id, timeout: 10 });
      const st = await containerState(env.daemon.client, id);
      assert.equal(st.state, 'CONTAINER_EXITED');
      assert.equal(st.exit_code, 0, 'the TERM trap ran and exited 0');
      assert.equal((await readCriLog(st.log_path)).at(-1)?.text, 'bye');
      await unary(rt(), 'StopContainer', { container_id: id, timeout: 10 }); // idempotent
      await unary(rt(), 'RemoveContainer', { container_id: id });
      await rejectsWith(unary(rt(), 'ContainerStatus', { container_id: id }), 'NOT_FOUND');
      await unary(rt(), 'RemoveContainer', { container_id: id }); // idempotent
    });
  });

  test('a container that ignores SIGTERM is killed after the timeout', async () => {
    const { container_id: id } = await unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg,
      config: containerConfig('stubborn', env.busybox, ['sh', '-c', 'trap "echo got TERM" TERM; while true; do sleep 0.2; done']),
    });
    await unary(rt(), 'StartContainer', { container_id: id });
    await waitFor('the trap to be set', async () => ((await unary(rt(), 'ExecSync', { container_id: id, cmd: ['true'], timeout: 10 })).exit_code === 0 ? true : undefined));
    await unary(rt(), 'StopContainer', { container_id: id, timeout: 2 });
    const st = await containerState(env.daemon.client, id);
    assert.equal(st.exit_code, 137, 'SIGKILL after the timeout');
    assert.ok((await readCriLog(st.log_path)).some((l) => l.text === 'got TERM'));
  });

  test('a stop signal sent before the first process handles it is delivered again once it does', async () => {
    // PID 1 of the container is `sh` (no TERM handler: the kernel drops SIGTERM to a namespace init)
    // until it execs `top`, which handles TERM. Stopping straight after start lands in that gap, and
    // the gap outlasts the 5 s the agent used to watch for (critest's `sh -c top` under load did).
    const { container_id: id } = await unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg,
      config: containerConfig('late-handler', env.busybox, ['sh', '-c', 'sleep 7; exec top -b']),
    });
    await unary(rt(), 'StartContainer', { container_id: id });
    await unary(rt(), 'StopContainer', { container_id: id, timeout: 60 });
    const st = await containerState(env.daemon.client, id);
    assert.equal(st.exit_code, 143, 'ended by the redelivered SIGTERM (128+15), not by SIGKILL after the timeout');
    await unary(rt(), 'RemoveContainer', { container_id: id });
  });

  test('a numeric image user gets its primary group and the image groups that list it', async () => {
    const r = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('groups', env.busybox, ['id', '-G'], {
      linux: { security_context: { run_as_user: { value: 33 }, supplemental_groups: [1234] } },
    }));
    // The test image's /etc/passwd gives uid 33 (www-data) gid 33, and its /etc/group lists www-data in staff (50).
    assert.deepEqual(r.log.map((l) => l.text), ['33 50 1234']);
  });

  test('a privileged container can create a bridge in the pod VM; an unprivileged one cannot', async () => {
    const cmd = ['sh', '-c', 'brctl addbr br-test && ip link show br-test >/dev/null && echo made'];
    const denied = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('bridge-denied', env.busybox, cmd));
    assert.notEqual(denied.status.exit_code, 0);
    const made = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('bridge-made', env.busybox, cmd, {
      linux: { security_context: { privileged: true } },
    }));
    assert.equal(made.status.exit_code, 0, made.log.map((l) => l.text).join('\n'));
    assert.deepEqual(made.log.map((l) => l.text), ['made']);
  });

  test('PID mode POD: containers share one PID namespace whose PID 1 is the pod\'s reaper, not a container', async () => {
    const podPid = { linux: { security_context: { namespace_options: { network: 'POD', pid: 'POD', ipc: 'POD' } } } };
    const { container_id: a } = await unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg,
      config: containerConfig('shared-pid-a', env.busybox, ['sleep', '3600'], podPid),
    });
    await unary(rt(), 'StartContainer', { container_id: a });
    const { container_id: b } = await unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg,
      config: containerConfig('shared-pid-b', env.busybox, ['sleep', '3600'], podPid),
    });
    await unary(rt(), 'StartContainer', { container_id: b });
    const ps = await unary(rt(), 'ExecSync', { container_id: b, cmd: ['sh', '-c', 'cat /proc/1/cmdline | tr "\\0" " "; echo; ps -o args | grep -c "^sleep 3600"'], timeout: 30 });
    assert.equal(ps.exit_code, 0, ps.stderr.toString());
    const [init, sleeps] = ps.stdout.toString().trim().split('\n');
    assert.match(init!, /^sh -c while/, 'PID 1 is the reaper');
    assert.equal(sleeps, '2', 'b sees its own sleep and a\'s');
    // A container in its own PID namespace sees only itself.
    const own = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('own-pid', env.busybox, ['sh', '-c', 'ps -o args | grep -c "^sleep 3600" || true']));
    assert.deepEqual(own.log.map((l) => l.text), ['0']);
    for (const id of [a, b]) await unary(rt(), 'RemoveContainer', { container_id: id });
  });

  test('RemoveContainer force-stops a running container', async () => {
    const { container_id: id } = await unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg, config: containerConfig('doomed', env.busybox, ['sleep', '1000']),
    });
    await unary(rt(), 'StartContainer', { container_id: id });
    await unary(rt(), 'RemoveContainer', { container_id: id });
    assert.deepEqual((await unary(rt(), 'ListContainers', { filter: { id } })).containers, []);
  });

  test('GetContainerEvents streams created, started, stopped and deleted', async () => {
    const events: ContainerEventResponse__Output[] = [];
    const stream = rt().GetContainerEvents({});
    stream.on('data', (e: ContainerEventResponse__Output) => events.push(e));
    stream.on('error', () => undefined); // cancelled below
    try {
      // The subscription is made when the call reaches the daemon, which a loaded host can delay past any fixed
      // wait: containers made and removed until the events of one arrive show the stream is live.
      const probes: string[] = [];
      await waitFor('the event stream to deliver', async () => {
        if (events.some((e) => probes.includes(e.container_id))) return true;
        const { container_id } = await unary(rt(), 'CreateContainer', {
          pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg, config: containerConfig(`events-probe-${probes.length}`, env.busybox, ['true']),
        });
        probes.push(container_id);
        await unary(rt(), 'RemoveContainer', { container_id });
        return undefined;
      }, 120_000);
      const r = await runToExit(env.daemon.client, sandboxId, sandboxCfg, containerConfig('evented', env.busybox, ['true']));
      await unary(rt(), 'RemoveContainer', { container_id: r.id });
      const mine = await waitFor('four events', async () => {
        const m = events.filter((e) => e.container_id === r.id);
        return m.length >= 4 ? m : undefined;
      }, 20_000);
      assert.deepEqual(mine.map((e) => e.container_event_type), [
        'CONTAINER_CREATED_EVENT', 'CONTAINER_STARTED_EVENT', 'CONTAINER_STOPPED_EVENT', 'CONTAINER_DELETED_EVENT',
      ]);
      assert.equal(mine[0]!.pod_sandbox_status!.id, sandboxId);
    } finally {
      stream.cancel();
    }
  });

  test('each image disk is plugged once per sandbox, shared by the containers that use it', async () => {
    const info = JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId, verbose: true })).info.info!);
    const ids = (info.imageDisks as Array<{ imageId: string }>).map((d) => d.imageId);
    const used = new Set((await unary(rt(), 'ListContainers', { filter: { pod_sandbox_id: sandboxId } })).containers.map((c) => c.image_id));
    assert.ok(used.size >= 2, 'the tests above used more than one image');
    assert.deepEqual([...new Set(ids)].sort(), ids.slice().sort(), 'no image plugged twice');
    for (const id of used) assert.ok(ids.includes(id));
  });

  test('a RunPodSandbox that fails after booting undoes everything', async () => {
    const bad = sandboxConfig('badsysctl', logDir, { linux: { sysctls: { 'net.core.no_such_knob': '1' } } });
    await rejectsWith(unary(rt(), 'RunPodSandbox', { config: bad }), 'INVALID_ARGUMENT', /no_such_knob/);
    assert.deepEqual(readdirSync(join(env.daemon.state, 'vms')), [sandboxId], 'no VM directory left');
    assert.deepEqual(readdirSync(join(env.daemon.root, 'pods')), [sandboxId], 'no record left');
    assert.deepEqual((await unary(rt(), 'ListPodSandbox', { filter: { label_selector: { app: 'badsysctl' } } })).items, []);
  });

  test('StopPodSandbox stops everything; Stop and Remove are idempotent and leave nothing', async () => {
    const { container_id: id } = await unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg, config: containerConfig('last', env.busybox, ['sleep', '1000']),
    });
    await unary(rt(), 'StartContainer', { container_id: id });
    const pid = JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId, verbose: true })).info.info!).vm.pid as number;
    await unary(rt(), 'StopPodSandbox', { pod_sandbox_id: sandboxId });
    assert.equal((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId })).status!.state, 'SANDBOX_NOTREADY');
    const st = await containerState(env.daemon.client, id);
    assert.equal(st.state, 'CONTAINER_EXITED');
    assert.equal(st.exit_code, 137);
    assert.ok(!existsSync(`/proc/${pid}`), 'QEMU is gone');
    // A healthy pod ends by its guest's own power-off (the agent's Shutdown), not by QMP quit or SIGKILL.
    // Both VM backends log as "vm" (podvisor's launcher) or "vm-libvirt".
    const vmLines = env.daemon.output().split('\n').filter((l) => l.includes(sandboxId) && /"component":"vm(-libvirt)?"/.test(l));
    const shutdown = vmLines.map((l) => JSON.parse(l) as { msg: string; event?: string; data?: { guest?: boolean; reason?: string }; detail?: string });
    assert.deepEqual(shutdown.find((l) => l.event === 'SHUTDOWN')?.data, { guest: true, reason: 'guest-shutdown' }, 'QEMU saw the guest power off');
    assert.equal(shutdown.find((l) => l.msg === 'QEMU exited')?.detail, 'stopped by podvisor (guest-shutdown)');
    assert.ok(!shutdown.some((l) => /graceful stop failed|QMP quit failed|SIGKILL/.test(l.msg)), 'no fallback phase ran');
    await unary(rt(), 'StopPodSandbox', { pod_sandbox_id: sandboxId });
    await rejectsWith(unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId, sandbox_config: sandboxCfg, config: containerConfig('late', env.busybox, ['true']),
    }), 'FAILED_PRECONDITION', /not ready/);
    await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: sandboxId });
    await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: sandboxId });
    await rejectsWith(unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: sandboxId }), 'NOT_FOUND');
    assert.deepEqual((await unary(rt(), 'ListContainers', { filter: { pod_sandbox_id: sandboxId } })).containers, []);
    assert.ok(!existsSync(join(env.daemon.state, 'vms', sandboxId)), 'the VM run directory is removed');
    assert.ok(!existsSync(join(env.daemon.root, 'pods', sandboxId)), 'the records are removed');
    // The name is free again.
    const again = (await unary(rt(), 'RunPodSandbox', { config: sandboxCfg })).pod_sandbox_id;
    await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: again });
  });
});
