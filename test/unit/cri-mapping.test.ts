/**
 * The CRI <-> domain mapping of src/cri/, without a daemon. Requests go through
 * the real proto encoder and decoder first, so the mapping sees exactly the
 * objects grpc-js hands a handler (proto3 defaults filled, int64 as strings,
 * enums as names); responses are encoded and decoded again, so a field the
 * proto does not have, or a value of the wrong type, fails here.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { status as grpcStatus, type MethodDefinition } from '@grpc/grpc-js';
import { isPodvisorError, PodvisorError, STATUS_NUMBERS, type ErrorCode } from '../../src/errors.js';
import { grpcCodeOf, toServiceError } from '../../src/cri/grpc-status.js';
import { RuntimeService, ImageService } from '../../src/cri/proto.js';
import { identityFromCri, int, namespaceOptionsFromCri, requireId, resourcesFromCri } from '../../src/cri/fields.js';
import { containerConfigFromCri, containerFilterFromCri, containerStatusToCri, containerToCri } from '../../src/cri/containers.js';
import { sandboxConfigFromCri, sandboxFilterFromCri, sandboxStatusToCri, sandboxToCri } from '../../src/cri/sandboxes.js';
import { containerStatsToCri, podMetricsToCri, sandboxStatsToCri } from '../../src/cri/stats.js';
import { registryAuthFrom, requiredImageRef, toCriImage } from '../../src/cri/images.js';
import type { ContainerRecord } from '../../src/pod/records.js';
import { sampleContainer, sampleSandbox } from '../helpers/pod-records.js';

type AnyMethod = MethodDefinition<unknown, unknown>;
const runtimeRpc = (name: string) => (RuntimeService as unknown as Record<string, AnyMethod>)[name]!;
const imageRpc = (name: string) => (ImageService as unknown as Record<string, AnyMethod>)[name]!;

/** A request as a handler receives it: encoded by a client, decoded by the server. */
function received<T>(method: AnyMethod, req: object): T {
  return method.requestDeserialize(method.requestSerialize(req)) as T;
}

/** A response as a client reads it: what the mapping produced, through the wire and back. */
function onTheWire<T>(method: AnyMethod, res: object): T {
  return method.responseDeserialize(method.responseSerialize(res)) as T;
}

const rejects = (fn: () => unknown, code: string, message: RegExp) =>
  assert.throws(fn, (e) => isPodvisorError(e, code as never) && message.test(e.message));

describe('errors', () => {
  test('every error code is the gRPC status of the same name', () => {
    for (const code of Object.keys(STATUS_NUMBERS) as ErrorCode[]) assert.equal(grpcCodeOf(code), grpcStatus[code], code);
  });

  test('a PodvisorError keeps its code and message; anything else is INTERNAL', () => {
    assert.deepEqual([toServiceError(new PodvisorError('NOT_FOUND', 'no pod x')).code, toServiceError(new PodvisorError('NOT_FOUND', 'no pod x')).details], [grpcStatus.NOT_FOUND, 'no pod x']);
    assert.equal(toServiceError(new TypeError('boom')).code, grpcStatus.INTERNAL);
  });
});

describe('shared fields', () => {
  test('requireId refuses an empty id as the caller\'s mistake', () => {
    assert.equal(requireId('abc', 'container_id'), 'abc');
    rejects(() => requireId('', 'container_id'), 'INVALID_ARGUMENT', /container_id is empty/);
  });

  test('int reads int64 strings, treats absent as 0 and refuses what JS cannot hold exactly', () => {
    assert.equal(int('42', 'x'), 42);
    assert.equal(int('-7', 'x'), -7);
    assert.equal(int(undefined, 'x'), 0);
    assert.equal(int('', 'x'), 0);
    rejects(() => int('9223372036854775807', 'cpu_quota'), 'INVALID_ARGUMENT', /cpu_quota .* not an integer/);
  });

  test('namespace options default as kubelet does and read names or numbers', () => {
    assert.deepEqual(namespaceOptionsFromCri(null), { network: 'POD', pid: 'CONTAINER', ipc: 'POD', targetId: '' });
    const ns = received<{ config: { linux: { security_context: { namespace_options: never } } } }>(runtimeRpc('RunPodSandbox'), {
      config: { linux: { security_context: { namespace_options: { network: 'NODE', pid: 3, ipc: 'CONTAINER', target_id: 'c1' } } } },
    }).config.linux.security_context.namespace_options;
    assert.deepEqual(namespaceOptionsFromCri(ns), { network: 'NODE', pid: 'TARGET', ipc: 'CONTAINER', targetId: 'c1' });
  });

  test('resources and identity read int64 strings; absent wrappers stay absent', () => {
    assert.equal(resourcesFromCri(null), undefined);
    assert.deepEqual(identityFromCri(null), { supplementalGroups: [] });
    assert.deepEqual(identityFromCri({ run_as_user: { value: '0' }, supplemental_groups: ['10', '20'] }), { runAsUser: 0, supplementalGroups: [10, 20] });
  });
});

describe('sandboxes', () => {
  test('RunPodSandbox config maps to the pod domain', () => {
    const req = received<{ config: never }>(runtimeRpc('RunPodSandbox'), {
      config: {
        metadata: { name: 'web', namespace: 'ns', uid: 'u1', attempt: 2 },
        hostname: 'web-0',
        log_directory: '/var/log/pods/ns_web_u1',
        dns_config: { servers: ['10.0.0.10'], searches: ['ns.svc.cluster.local'], options: ['ndots:5'] },
        port_mappings: [{ protocol: 'UDP', container_port: 53, host_port: 5353, host_ip: '127.0.0.1' }],
        labels: { app: 'web' },
        linux: {
          cgroup_parent: '/kubepods/pod1',
          sysctls: { 'net.ipv4.ip_forward': '1' },
          resources: { cpu_period: 100000, cpu_quota: 250000, memory_limit_in_bytes: 1073741824 },
          security_context: { run_as_user: { value: 1000 }, run_as_group: { value: 3000 }, supplemental_groups: [4000], readonly_rootfs: true },
        },
      },
    });
    const c = sandboxConfigFromCri(req.config);
    assert.deepEqual(c.metadata, { name: 'web', namespace: 'ns', uid: 'u1', attempt: 2 });
    assert.equal(c.hostname, 'web-0');
    assert.deepEqual(c.dnsConfig, { servers: ['10.0.0.10'], searches: ['ns.svc.cluster.local'], options: ['ndots:5'] });
    assert.deepEqual(c.portMappings, [{ protocol: 'UDP', containerPort: 53, hostPort: 5353, hostIp: '127.0.0.1' }]);
    assert.equal(c.cgroupParent, '/kubepods/pod1');
    assert.deepEqual(c.sysctls, { 'net.ipv4.ip_forward': '1' });
    assert.equal(c.resources?.cpuQuota, 250000);
    assert.equal(c.resources?.memoryLimitInBytes, 1073741824);
    assert.equal(c.overhead, undefined);
    assert.equal(c.runAsUser, 1000);
    assert.equal(c.runAsGroup, 3000);
    assert.deepEqual(c.supplementalGroups, [4000]);
    assert.equal(c.readonlyRootfs, true);
    assert.deepEqual(c.namespaceOptions, { network: 'POD', pid: 'CONTAINER', ipc: 'POD', targetId: '' });
  });

  test('a sandbox config without config or metadata is INVALID_ARGUMENT', () => {
    rejects(() => sandboxConfigFromCri(null), 'INVALID_ARGUMENT', /no sandbox config/);
    const req = received<{ config: never }>(runtimeRpc('RunPodSandbox'), { config: { hostname: 'x' } });
    rejects(() => sandboxConfigFromCri(req.config), 'INVALID_ARGUMENT', /no metadata/);
  });

  test('filters read the state enum', () => {
    const req = received<{ filter: never }>(runtimeRpc('ListPodSandbox'), { filter: { id: 'abc', state: { state: 'SANDBOX_NOTREADY' }, label_selector: { app: 'web' } } });
    assert.deepEqual(sandboxFilterFromCri(req.filter), { id: 'abc', state: 'notready', labelSelector: { app: 'web' } });
    assert.deepEqual(sandboxFilterFromCri(null), {});
  });

  test('records map to PodSandbox and PodSandboxStatus with CRI state names', () => {
    const r = sampleSandbox({ state: 'notready', runtimeHandler: 'kata' });
    const listed = onTheWire<{ items: { id: string; state: string; runtime_handler: string; metadata: { uid: string } }[] }>(
      runtimeRpc('ListPodSandbox'), { items: [sandboxToCri(r)] }).items[0]!;
    assert.equal(listed.id, r.id);
    assert.equal(listed.state, 'SANDBOX_NOTREADY');
    assert.equal(listed.runtime_handler, 'kata');
    assert.equal(listed.metadata.uid, 'uid-1');
    const status = onTheWire<{ status: { state: string; network: { ip: string }; created_at: string } }>(
      runtimeRpc('PodSandboxStatus'), { status: sandboxStatusToCri(sampleSandbox({ network: { mode: 'loopback', ips: ['10.1.0.5', 'fd00::5'] } })) }).status;
    assert.equal(status.state, 'SANDBOX_READY');
    assert.equal(status.network.ip, '10.1.0.5');
    assert.match(status.created_at, /^\d+$/);
  });
});

describe('containers', () => {
  const create = (config: object) => containerConfigFromCri(received<{ config: never }>(runtimeRpc('CreateContainer'), { pod_sandbox_id: 'p', config }).config);

  test('CreateContainer config maps to the pod domain', () => {
    const c = create({
      metadata: { name: 'app', attempt: 1 },
      image: { image: 'busybox:1.36' },
      command: ['sh'], args: ['-c', 'true'], working_dir: '/w',
      envs: [{ key: 'A', value: '1' }],
      mounts: [{ container_path: '/data', host_path: '/srv/data', readonly: true, propagation: 'PROPAGATION_HOST_TO_CONTAINER' }],
      log_path: 'app/1.log', tty: true,
      linux: {
        resources: { cpu_shares: 512, memory_limit_in_bytes: 268435456 },
        security_context: {
          run_as_user: { value: 1000 }, run_as_username: '', supplemental_groups: [5],
          capabilities: { add_capabilities: ['NET_ADMIN'], drop_capabilities: ['ALL'] },
          no_new_privs: true, masked_paths: ['/proc/kcore'],
          namespace_options: { pid: 'POD' },
          seccomp: { profile_type: 'Localhost', localhost_ref: '/etc/seccomp/p.json' },
        },
      },
    });
    assert.deepEqual(c.metadata, { name: 'app', attempt: 1 });
    assert.equal(c.image, 'busybox:1.36');
    assert.deepEqual([c.command, c.args, c.workingDir], [['sh'], ['-c', 'true'], '/w']);
    assert.deepEqual(c.envs, [{ key: 'A', value: '1' }]);
    assert.deepEqual(c.mounts, [{ containerPath: '/data', hostPath: '/srv/data', readonly: true, selinuxRelabel: false, propagation: 'HOST_TO_CONTAINER' }]);
    assert.equal(c.tty, true);
    assert.equal(c.resources?.cpuShares, 512);
    assert.equal(c.security.runAsUser, 1000);
    assert.equal(c.security.runAsGroup, undefined);
    assert.deepEqual(c.security.supplementalGroups, [5]);
    assert.deepEqual(c.security.addCapabilities, ['NET_ADMIN']);
    assert.deepEqual(c.security.dropCapabilities, ['ALL']);
    assert.equal(c.security.noNewPrivs, true);
    assert.deepEqual(c.security.maskedPaths, ['/proc/kcore']);
    assert.equal(c.security.namespaceOptions.pid, 'POD');
    assert.deepEqual(c.security.seccomp, { type: 'Localhost', localhostRef: '/etc/seccomp/p.json' });
    assert.equal(c.security.apparmor, undefined);
  });

  test('empty masked and readonly path lists mean "runtime defaults", not "none"', () => {
    const c = create({ metadata: { name: 'a' }, image: { image: 'i' }, linux: { security_context: { privileged: false } } });
    assert.equal(c.security.maskedPaths, undefined);
    assert.equal(c.security.readonlyPaths, undefined);
  });

  test('the deprecated profile strings map to security profiles; the new fields win', () => {
    const c = create({ metadata: { name: 'a' }, image: { image: 'i' }, linux: { security_context: { seccomp_profile_path: 'docker/default', apparmor_profile: 'localhost/k8s-apparmor' } } });
    assert.deepEqual(c.security.seccomp, { type: 'RuntimeDefault', localhostRef: '' });
    assert.deepEqual(c.security.apparmor, { type: 'Localhost', localhostRef: 'k8s-apparmor' });
    const both = create({ metadata: { name: 'a' }, image: { image: 'i' }, linux: { security_context: { seccomp_profile_path: 'unconfined', seccomp: { profile_type: 'RuntimeDefault' } } } });
    assert.deepEqual(both.security.seccomp, { type: 'RuntimeDefault', localhostRef: '' });
    rejects(() => create({ metadata: { name: 'a' }, image: { image: 'i' }, linux: { security_context: { seccomp_profile_path: 'bogus' } } }), 'INVALID_ARGUMENT', /seccomp_profile_path "bogus"/);
  });

  test('a container config without metadata or image is INVALID_ARGUMENT', () => {
    rejects(() => containerConfigFromCri(null), 'INVALID_ARGUMENT', /no container config/);
    rejects(() => create({ image: { image: 'i' } }), 'INVALID_ARGUMENT', /no metadata/);
    rejects(() => create({ metadata: { name: 'a' } }), 'INVALID_ARGUMENT', /names no image/);
  });

  test('filters read the state enum', () => {
    const req = received<{ filter: never }>(runtimeRpc('ListContainers'), { filter: { pod_sandbox_id: 'p', state: { state: 'CONTAINER_EXITED' } } });
    assert.deepEqual(containerFilterFromCri(req.filter), { id: '', podSandboxId: 'p', state: 'exited', labelSelector: {} });
    const stats = received<{ filter: never }>(runtimeRpc('ListContainerStats'), { filter: { id: 'c' } });
    assert.deepEqual(containerFilterFromCri(stats.filter), { id: 'c', podSandboxId: '', state: undefined, labelSelector: {} });
  });

  test('records map to Container and ContainerStatus with CRI state names', () => {
    const states: [ContainerRecord['state'], string][] = [['created', 'CONTAINER_CREATED'], ['running', 'CONTAINER_RUNNING'], ['exited', 'CONTAINER_EXITED'], ['unknown', 'CONTAINER_UNKNOWN']];
    for (const [state, name] of states) {
      const r = sampleContainer('sb1', 'app', { state });
      const listed = onTheWire<{ containers: { state: string; pod_sandbox_id: string; image_ref: string }[] }>(runtimeRpc('ListContainers'), { containers: [containerToCri(r)] }).containers[0]!;
      assert.equal(listed.state, name);
      assert.equal(listed.pod_sandbox_id, 'sb1');
      assert.equal(listed.image_ref, r.imageId);
    }
    const exited = sampleContainer('sb1', 'app', { state: 'exited', exitCode: 137, reason: 'OOMKilled', startedAt: '5', finishedAt: '9', logFile: '/l/app.log' });
    const status = onTheWire<{ status: { state: string; exit_code: number; reason: string; started_at: string; finished_at: string; log_path: string; image_ref: string } }>(
      runtimeRpc('ContainerStatus'), { status: containerStatusToCri(exited) }).status;
    assert.deepEqual(
      [status.state, status.exit_code, status.reason, status.started_at, status.finished_at, status.log_path, status.image_ref],
      ['CONTAINER_EXITED', 137, 'OOMKilled', '5', '9', '/l/app.log', exited.imageRef],
    );
  });
});

describe('stats', () => {
  const guest = {
    timestampMs: 1_700_000_000_123.5, cpuUsageNanos: 12_345_678_901n, memoryWorkingSetBytes: 10, memoryUsageBytes: 20, memoryRssBytes: 5, pageFaults: 0, majorPageFaults: 0, processCount: 3,
    psi: { cpu: { some: { avg10: 1.5, avg60: 0, avg300: 0, totalUsec: 42 } } },
    detail: { cpuUserNanos: 0n, cpuSystemNanos: 0n, cpuThrottledNanos: 0n, memoryCacheBytes: 0, oomKills: 0, io: { readBytes: 0, writeBytes: 0, readOps: 0, writeOps: 0 } },
  };

  test('container stats keep nanosecond timestamps and 64-bit counters exact', () => {
    const c = sampleContainer('sb1', 'app');
    const s = onTheWire<{ stats: { attributes: { id: string }; cpu: { timestamp: string; usage_core_nano_seconds: { value: string }; usage_nano_cores: unknown }; memory: { available_bytes: unknown }; writable_layer: { used_bytes: { value: string } } } }>(
      runtimeRpc('ContainerStats'),
      { stats: containerStatsToCri({ container: c, stats: { ...guest, writableLayer: { bytes: 4096, inodes: 2 } } }) },
    ).stats;
    assert.equal(s.attributes.id, c.id);
    assert.equal(s.cpu.timestamp, '1700000000123500000');
    assert.equal(s.cpu.usage_core_nano_seconds.value, '12345678901');
    assert.equal(s.cpu.usage_nano_cores, null, 'no rate on the first sample');
    assert.equal(s.memory.available_bytes, null, 'no limit, no available bytes');
    assert.equal(s.writable_layer.used_bytes.value, '4096');
  });

  test('PSI goes out where the guest has it; page faults are unset, not 0, where it has none', () => {
    const c = sampleContainer('sb1', 'app');
    const { pageFaults: _p, majorPageFaults: _m, ...noFaults } = guest;
    const s = onTheWire<{ stats: { cpu: { psi: { Some: { Total: string; Avg10: number }; Full: unknown } }; memory: { psi: unknown; page_faults: unknown }; io: unknown } }>(
      runtimeRpc('ContainerStats'), { stats: containerStatsToCri({ container: c, stats: noFaults }) },
    ).stats;
    assert.equal(s.cpu.psi.Some.Total, '42');
    assert.equal(s.cpu.psi.Some.Avg10, 1.5);
    assert.equal(s.cpu.psi.Full, null);
    assert.equal(s.memory.psi, null);
    assert.equal(s.memory.page_faults, null);
    assert.equal(s.io, null);
  });

  test('pod sandbox stats carry the pod numbers and their containers', () => {
    const sb = sampleSandbox();
    const c = sampleContainer(sb.id, 'app');
    const s = onTheWire<{ stats: { attributes: { id: string }; linux: { cpu: { usage_nano_cores: { value: string } }; process: { process_count: { value: string } }; containers: unknown[] } } }>(
      runtimeRpc('PodSandboxStats'),
      { stats: sandboxStatsToCri({ sandbox: sb, guest, usageNanoCores: 250_000_000, containers: [{ container: c, stats: guest }] }) },
    ).stats;
    assert.equal(s.attributes.id, sb.id);
    assert.equal(s.linux.cpu.usage_nano_cores.value, '250000000');
    assert.equal(s.linux.process.process_count.value, '3');
    assert.equal(s.linux.containers.length, 1);
  });

  test('a container or pod its guest never sampled goes out with attributes and no usage; a stale sample keeps its time in metrics', () => {
    const sb = sampleSandbox();
    const c = sampleContainer(sb.id, 'app');
    const bare = onTheWire<{ stats: { attributes: { id: string }; cpu: unknown; memory: unknown } }>(
      runtimeRpc('ContainerStats'), { stats: containerStatsToCri({ container: c }) }).stats;
    assert.deepEqual([bare.attributes.id, bare.cpu, bare.memory], [c.id, null, null]);
    const pod = onTheWire<{ stats: { attributes: { id: string }; linux: { cpu: unknown; containers: unknown[] } } }>(
      runtimeRpc('PodSandboxStats'), { stats: sandboxStatsToCri({ sandbox: sb, containers: [{ container: c }] }) }).stats;
    assert.deepEqual([pod.attributes.id, pod.linux.cpu, pod.linux.containers.length], [sb.id, null, 1]);
    const fresh = podMetricsToCri({ sandbox: sb, guest, containers: [{ container: c }] });
    assert.ok(fresh.metrics!.length > 0);
    assert.ok(fresh.metrics!.every((m) => m.timestamp === '0'), 'live samples have timestamp 0');
    assert.deepEqual(fresh.container_metrics![0]!.metrics, [], 'no sample, no series');
    const stale = podMetricsToCri({ sandbox: sb, guest, stale: true, containers: [] });
    assert.ok(stale.metrics!.every((m) => m.timestamp === '1700000000123500000'), 'a cached sample carries the time it was taken');
  });
});

describe('images', () => {
  test('an image reference is required and named in the error', () => {
    const req = received<{ image: never }>(imageRpc('PullImage'), { image: { image: '  busybox:1.36 ' } });
    assert.equal(requiredImageRef(req.image, 'PullImage'), 'busybox:1.36');
    rejects(() => requiredImageRef(received<{ image: never }>(imageRpc('ImageStatus'), {}).image, 'ImageStatus'), 'INVALID_ARGUMENT', /ImageStatus: image.image is empty/);
  });

  test('auth maps field by field; absent auth is anonymous', () => {
    const req = received<{ auth: never }>(imageRpc('PullImage'), { image: { image: 'x' }, auth: { username: 'u', password: 'p', server_address: 'r.example' } });
    assert.deepEqual(registryAuthFrom(req.auth), { username: 'u', password: 'p', auth: '', serverAddress: 'r.example', identityToken: '', registryToken: '' });
    assert.equal(registryAuthFrom(received<{ auth: never }>(imageRpc('PullImage'), { image: { image: 'x' } }).auth), undefined);
  });

  test('an image maps to CRI Image with uid or username', () => {
    const base = { id: 'sha256:' + 'c'.repeat(64), repoTags: ['busybox:1.36'], repoDigests: ['busybox@sha256:' + 'd'.repeat(64)], size: 4_500_000 };
    const numeric = onTheWire<{ images: { id: string; size: string; uid: { value: string } | null; username: string }[] }>(
      imageRpc('ListImages'), { images: [toCriImage({ ...base, uid: 0 } as never)] }).images[0]!;
    assert.deepEqual([numeric.id, numeric.size, numeric.uid?.value, numeric.username], [base.id, '4500000', '0', '']);
    const named = onTheWire<{ images: { uid: unknown; username: string }[] }>(imageRpc('ListImages'), { images: [toCriImage({ ...base, username: 'nobody' } as never)] }).images[0]!;
    assert.deepEqual([named.uid, named.username], [null, 'nobody']);
  });
});
