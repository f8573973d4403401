// The CRI proto must stay wire-compatible with kubelet/crictl: these tests pin the
// RPC set of Kubernetes 1.36, check published field numbers against raw encoded
// bytes, round-trip the messages handlers depend on, and drive the services
// through real grpc-js clients over a unix socket.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';
import { criPackageDefinition, ImageService, RuntimeService } from '../../src/cri/proto.js';
import { criClient, type CriClient } from '../../src/cri/client.js';
import type { ContainerEventResponse__Output } from '../../src/cri/generated/runtime/v1/ContainerEventResponse.js';

const RUNTIME_RPCS = [
  'Version',
  'RunPodSandbox', 'StopPodSandbox', 'RemovePodSandbox', 'PodSandboxStatus', 'ListPodSandbox',
  'CreateContainer', 'StartContainer', 'StopContainer', 'RemoveContainer', 'ListContainers',
  'ContainerStatus', 'UpdateContainerResources', 'ReopenContainerLog',
  'ExecSync', 'Exec', 'Attach', 'PortForward',
  'ContainerStats', 'ListContainerStats', 'PodSandboxStats', 'ListPodSandboxStats',
  'UpdateRuntimeConfig', 'Status', 'CheckpointContainer', 'GetContainerEvents',
  'ListMetricDescriptors', 'ListPodSandboxMetrics', 'RuntimeConfig', 'UpdatePodSandboxResources',
  'StreamPodSandboxes', 'StreamContainers', 'StreamContainerStats', 'StreamPodSandboxStats', 'StreamPodSandboxMetrics',
];
const IMAGE_RPCS = ['ListImages', 'ImageStatus', 'PullImage', 'RemoveImage', 'ImageFsInfo', 'StreamImages'];
const SERVER_STREAMING = new Set(['GetContainerEvents', ...[...RUNTIME_RPCS, ...IMAGE_RPCS].filter((r) => r.startsWith('Stream'))]);

function messageType(name: string): MessageTypeDefinition<object, unknown> {
  const def = criPackageDefinition[`runtime.v1.${name}`];
  assert.ok(def && 'serialize' in def && def.format === 'Protocol Buffer 3 DescriptorProto', `no message runtime.v1.${name}`);
  return def as MessageTypeDefinition<object, unknown>;
}

const encode = (name: string, value: object): Buffer => messageType(name).serialize(value);
const decode = (name: string, bytes: Buffer): Record<string, unknown> => messageType(name).deserialize(bytes) as Record<string, unknown>;
const hex = (bytes: Buffer) => bytes.toString('hex');
/** A length-delimited field: tag byte(s), length, payload. */
const ld = (tagHex: string, payload: Buffer) => Buffer.concat([Buffer.from(tagHex, 'hex'), Buffer.from([payload.length]), payload]);

describe('CRI services', () => {
  it('RuntimeService has exactly the 35 RPCs of Kubernetes 1.36', () => {
    assert.deepEqual(Object.keys(RuntimeService).sort(), [...RUNTIME_RPCS].sort());
    assert.equal(RUNTIME_RPCS.length, 35);
  });

  it('ImageService has exactly its 6 RPCs', () => {
    assert.deepEqual(Object.keys(ImageService).sort(), [...IMAGE_RPCS].sort());
  });

  it('uses the runtime.v1 paths kubelet calls', () => {
    assert.equal(RuntimeService.RunPodSandbox.path, '/runtime.v1.RuntimeService/RunPodSandbox');
    assert.equal(ImageService.PullImage.path, '/runtime.v1.ImageService/PullImage');
  });

  it('GetContainerEvents and the Stream* lists are server-streaming and every other RPC is unary', () => {
    for (const [name, method] of [...Object.entries(RuntimeService), ...Object.entries(ImageService)]) {
      assert.equal(method.requestStream, false, `${name} request stream`);
      assert.equal(method.responseStream, SERVER_STREAMING.has(name), `${name} response stream`);
    }
  });
});

describe('field numbers on the wire', () => {
  it('VersionResponse.runtime_api_version is field 4', () => {
    assert.equal(hex(encode('VersionResponse', { runtime_api_version: 'v1' })), '22' + '02' + hex(Buffer.from('v1')));
  });

  it('ImageSpec.user_specified_image is field 18 and runtime_handler 19 (two-byte tags)', () => {
    // (18 << 3) | 2 = 146 -> varint 92 01; (19 << 3) | 2 = 154 -> 9a 01
    assert.equal(hex(encode('ImageSpec', { user_specified_image: 'a' })), '9201' + '01' + '61');
    assert.equal(hex(encode('ImageSpec', { runtime_handler: 'k' })), '9a01' + '01' + '6b');
    // cri-api 1.36: image_ref = 20 -> (20 << 3) | 2 = 162 -> a2 01
    assert.equal(hex(encode('ImageSpec', { image_ref: 'i' })), 'a201' + '01' + '69');
  });

  it('RuntimeFeatures.user_namespaces_host_network is field 2; ContainerStatus.stop_signal 19, user 18', () => {
    assert.equal(hex(encode('RuntimeFeatures', { user_namespaces_host_network: true })), '1001');
    assert.equal(hex(encode('ContainerStatus', { stop_signal: 'SIGUSR1' })), '9801' + '1d'); // SIGUSR1 = 29
    assert.equal(hex(encode('ContainerStatus', { user: { linux: { uid: 7 } } })), '9201' + '04' + '0a02' + '0807');
  });

  it('RunPodSandboxRequest > config(1) > linux(8) > security_context(2) > supplemental_groups_policy(11)', () => {
    const bytes = encode('RunPodSandboxRequest', {
      config: { linux: { security_context: { supplemental_groups_policy: 'Strict' } } },
    });
    // 0a: field 1 LEN, 42: field 8 LEN, 12: field 2 LEN, 58: field 11 VARINT, 01 = Strict
    assert.equal(hex(bytes), '0a06' + '4204' + '1202' + '5801');
  });

  it('supplemental_groups (field 5) is packed like Go encodes it', () => {
    const bytes = encode('LinuxSandboxSecurityContext', { supplemental_groups: [1000, 2000] });
    assert.equal(hex(bytes), '2a04' + 'e807' + 'd00f');
  });

  it('ContainerConfig.stop_signal is field 18 and SIGKILL is 13', () => {
    assert.equal(hex(encode('CreateContainerRequest', { config: { stop_signal: 'SIGKILL' } })), '1203' + '9001' + '0d');
  });

  it('AuthConfig.registry_token is field 6 under PullImageRequest.auth (2)', () => {
    assert.equal(hex(encode('PullImageRequest', { auth: { registry_token: 't' } })), '1203' + '3201' + '74');
  });

  it('decodes bytes laid out as kubelet sends them', () => {
    // RunPodSandboxRequest{ config: { metadata: { name: "web", uid: "u1", namespace: "ns", attempt: 2 } }, runtime_handler: "kata" }
    const metadata = Buffer.concat([
      ld('0a', Buffer.from('web')), ld('12', Buffer.from('u1')), ld('1a', Buffer.from('ns')), Buffer.from('2002', 'hex'),
    ]);
    const bytes = Buffer.concat([ld('0a', ld('0a', metadata)), ld('12', Buffer.from('kata'))]);
    const request = decode('RunPodSandboxRequest', bytes) as {
      runtime_handler: string;
      config: { metadata: unknown; hostname: string; labels: object; port_mappings: unknown[]; linux: unknown };
    };
    assert.equal(request.runtime_handler, 'kata');
    assert.deepEqual(request.config.metadata, { name: 'web', uid: 'u1', namespace: 'ns', attempt: 2 });
    // proto3 defaults are filled in, so handlers can read absent fields directly.
    assert.equal(request.config.hostname, '');
    assert.deepEqual(request.config.labels, {});
    assert.deepEqual(request.config.port_mappings, []);
    assert.equal(request.config.linux, null);
  });

  it('a few more published numbers, read from the loaded descriptors', () => {
    const published: Array<[string, string, number]> = [
      ['PodSandboxConfig', 'log_directory', 3],
      ['PodSandboxConfig', 'windows', 9],
      ['LinuxSandboxSecurityContext', 'run_as_group', 8],
      ['LinuxSandboxSecurityContext', 'seccomp', 9],
      ['LinuxContainerSecurityContext', 'no_new_privs', 11],
      ['LinuxContainerSecurityContext', 'run_as_group', 12],
      ['LinuxContainerSecurityContext', 'supplemental_groups_policy', 17],
      ['LinuxContainerResources', 'memory_swap_limit_in_bytes', 10],
      ['ContainerConfig', 'CDI_devices', 17],
      ['Mount', 'uidMappings', 6],
      ['Mount', 'image_sub_path', 10],
      ['ContainerStatus', 'user', 18],
      ['ContainerStatus', 'stop_signal', 19],
      ['PodSandboxStatusResponse', 'timestamp', 4],
      ['StatusResponse', 'features', 4],
      ['Image', 'pinned', 8],
      ['MemoryUsage', 'psi', 8],
      ['ContainerStats', 'io', 6],
      ['ContainerEventResponse', 'containers_statuses', 5],
      ['UpdatePodSandboxResourcesRequest', 'resources', 3],
    ];
    for (const [message, field, number] of published) {
      const descriptor = messageType(message).type as { field: Array<{ name: string; number: number }> };
      assert.equal(descriptor.field.find((f) => f.name === field)?.number, number, `${message}.${field}`);
    }
  });
});

describe('round trips', () => {
  it('PodSandboxConfig with a linux security context', () => {
    const config = {
      metadata: { name: 'web', uid: '6d1c', namespace: 'default', attempt: 1 },
      hostname: 'web-0',
      log_directory: '/var/log/pods/default_web_6d1c',
      dns_config: { servers: ['10.96.0.10'], searches: ['default.svc.cluster.local'], options: ['ndots:5'] },
      port_mappings: [{ protocol: 'UDP', container_port: 53, host_port: 5353, host_ip: '127.0.0.1' }],
      labels: { app: 'web' },
      annotations: { 'kubernetes.io/config.source': 'api' },
      linux: {
        cgroup_parent: '/kubepods/besteffort/pod6d1c',
        sysctls: { 'net.ipv4.ip_unprivileged_port_start': '0' },
        security_context: {
          namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD', target_id: '', userns_options: {
            mode: 'POD', uids: [{ host_id: 100000, container_id: 0, length: 65536 }], gids: [],
          } },
          selinux_options: { user: 'system_u', role: 'system_r', type: 'container_t', level: 's0:c1,c2' },
          run_as_user: { value: '1000' },
          run_as_group: { value: '3000' },
          readonly_rootfs: true,
          supplemental_groups: ['4000', '5000'],
          supplemental_groups_policy: 'Strict',
          privileged: false,
          seccomp: { profile_type: 'Localhost', localhost_ref: 'profiles/audit.json' },
          apparmor: { profile_type: 'RuntimeDefault', localhost_ref: '' },
        },
        resources: { cpu_quota: '50000', cpu_period: '100000', memory_limit_in_bytes: '268435456' },
      },
    };
    const back = decode('PodSandboxConfig', encode('PodSandboxConfig', config)) as any;
    assert.deepEqual(back.metadata, config.metadata);
    assert.deepEqual(back.dns_config, config.dns_config);
    assert.deepEqual(back.port_mappings, config.port_mappings);
    assert.deepEqual(back.labels, config.labels);
    assert.deepEqual(back.annotations, config.annotations);
    assert.equal(back.linux.cgroup_parent, config.linux.cgroup_parent);
    assert.deepEqual(back.linux.sysctls, config.linux.sysctls);
    const sc = back.linux.security_context;
    assert.deepEqual(sc.namespace_options, config.linux.security_context.namespace_options);
    assert.deepEqual(sc.selinux_options, config.linux.security_context.selinux_options);
    assert.deepEqual(sc.run_as_user, { value: '1000' });
    assert.deepEqual(sc.run_as_group, { value: '3000' });
    assert.deepEqual(sc.supplemental_groups, ['4000', '5000']);
    assert.equal(sc.supplemental_groups_policy, 'Strict');
    assert.equal(sc.readonly_rootfs, true);
    assert.deepEqual(sc.seccomp, config.linux.security_context.seccomp);
    assert.deepEqual(sc.apparmor, config.linux.security_context.apparmor);
    assert.equal(back.linux.resources.memory_limit_in_bytes, '268435456');
    assert.equal(back.linux.resources.cpu_quota, '50000');
    assert.equal(back.windows, null);
  });

  it('ContainerConfig with mounts, devices and CDI devices', () => {
    const config = {
      metadata: { name: 'app', attempt: 3 },
      image: { image: 'sha256:' + 'ab'.repeat(32), annotations: {}, user_specified_image: 'nginx:1.27', runtime_handler: '', image_ref: '' },
      command: ['/bin/sh', '-c'],
      args: ['exec nginx -g "daemon off;"'],
      working_dir: '/srv',
      envs: [{ key: 'A', value: '1' }, { key: 'B', value: 'x=y' }],
      mounts: [
        {
          container_path: '/data', host_path: '/var/lib/kubelet/pods/6d1c/volumes/data', readonly: false,
          selinux_relabel: true, propagation: 'PROPAGATION_HOST_TO_CONTAINER',
          uidMappings: [{ host_id: 100000, container_id: 0, length: 65536 }], gidMappings: [],
          recursive_read_only: false, image: null, image_sub_path: '',
        },
        {
          container_path: '/models', host_path: '', readonly: true, selinux_relabel: false,
          propagation: 'PROPAGATION_PRIVATE', uidMappings: [], gidMappings: [], recursive_read_only: true,
          image: { image: 'registry.local/models:v1', annotations: {}, user_specified_image: '', runtime_handler: '', image_ref: '' },
          image_sub_path: 'weights',
        },
      ],
      devices: [{ container_path: '/dev/fuse', host_path: '/dev/fuse', permissions: 'rwm' }],
      CDI_devices: [{ name: 'vendor.com/gpu=0' }],
      labels: { 'io.kubernetes.container.name': 'app' },
      log_path: 'app/3.log',
      stdin: true,
      stdin_once: true,
      tty: false,
      stop_signal: 'SIGQUIT',
      linux: {
        resources: { oom_score_adj: '-997', hugepage_limits: [{ page_size: '2MB', limit: '4194304' }], unified: { 'memory.high': '1G' } },
        security_context: {
          capabilities: { add_capabilities: ['NET_ADMIN'], drop_capabilities: ['ALL'], add_ambient_capabilities: [] },
          no_new_privs: true,
          masked_paths: ['/proc/kcore'],
          readonly_paths: ['/proc/sys'],
          run_as_username: 'nginx',
        },
      },
    };
    const back = decode('ContainerConfig', encode('ContainerConfig', config)) as any;
    assert.deepEqual(back.metadata, config.metadata);
    assert.deepEqual(back.image, config.image);
    assert.deepEqual(back.command, config.command);
    assert.deepEqual(back.args, config.args);
    assert.deepEqual(back.envs, config.envs);
    assert.deepEqual(back.mounts, config.mounts);
    assert.deepEqual(back.devices, config.devices);
    assert.deepEqual(back.CDI_devices, config.CDI_devices);
    assert.equal(back.log_path, 'app/3.log');
    assert.equal(back.stdin_once, true);
    assert.equal(back.stop_signal, 'SIGQUIT');
    assert.equal(back.linux.resources.oom_score_adj, '-997');
    assert.deepEqual(back.linux.resources.hugepage_limits, config.linux.resources.hugepage_limits);
    assert.deepEqual(back.linux.resources.unified, config.linux.resources.unified);
    assert.deepEqual(back.linux.security_context.capabilities, config.linux.security_context.capabilities);
    assert.equal(back.linux.security_context.no_new_privs, true);
    assert.deepEqual(back.linux.security_context.masked_paths, ['/proc/kcore']);
    assert.equal(back.linux.security_context.run_as_username, 'nginx');
  });

  it('PullImageRequest with AuthConfig', () => {
    const request = {
      image: { image: '127.0.0.1:5000/busybox:1.36', annotations: { 'kubernetes.io/pod': 'x' }, user_specified_image: '', runtime_handler: 'kata', image_ref: '' },
      auth: {
        username: 'robot', password: 's3cret', auth: Buffer.from('robot:s3cret').toString('base64'),
        server_address: '127.0.0.1:5000', identity_token: 'refresh', registry_token: 'bearer',
      },
      sandbox_config: { metadata: { name: 'p', uid: 'u', namespace: 'n', attempt: 0 } },
    };
    const back = decode('PullImageRequest', encode('PullImageRequest', request)) as any;
    assert.deepEqual(back.image, request.image);
    assert.deepEqual(back.auth, request.auth);
    assert.deepEqual(back.sandbox_config.metadata, request.sandbox_config.metadata);
  });

  it('nanosecond timestamps above 2^53 survive as exact decimal strings', () => {
    const createdAt = '1732500000123456789';
    assert.ok(BigInt(createdAt) > BigInt(Number.MAX_SAFE_INTEGER));
    const back = decode('ContainerStatusResponse', encode('ContainerStatusResponse', {
      status: { id: 'c1', state: 'CONTAINER_EXITED', created_at: createdAt, finished_at: '9223372036854775807', exit_code: 137, reason: 'OOMKilled' },
    })) as any;
    assert.equal(back.status.created_at, createdAt);
    assert.equal(back.status.finished_at, '9223372036854775807');
    assert.equal(back.status.started_at, '0');
    assert.equal(back.status.state, 'CONTAINER_EXITED');
    assert.equal(back.status.exit_code, 137);
  });

  it('ExecSyncResponse keeps binary output as a Buffer', () => {
    const stdout = Buffer.from([0, 1, 2, 255, 10]);
    const back = decode('ExecSyncResponse', encode('ExecSyncResponse', { stdout, exit_code: 1 })) as any;
    assert.ok(Buffer.isBuffer(back.stdout));
    assert.deepEqual(back.stdout, stdout);
    assert.deepEqual(back.stderr, Buffer.alloc(0));
  });
});

describe('criClient over a real unix socket', () => {
  let dir: string;
  let socketPath: string;
  let server: grpc.Server;
  let client: CriClient;

  // A test server: echoes what the client sent so the round trip through both
  // service definitions and the shared channel is visible; the other RPCs are
  // left out so grpc-js answers UNIMPLEMENTED for them.
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'podvisor-cri-proto-'));
    socketPath = join(dir, 'cri.sock');
    server = new grpc.Server();
    server.addService(RuntimeService, {
      Version: (call: grpc.ServerUnaryCall<{ version: string }, unknown>, done: grpc.sendUnaryData<unknown>) =>
        done(null, { version: call.request.version, runtime_name: 'test-server', runtime_api_version: 'v1' }),
      GetContainerEvents: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        for (const type of ['CONTAINER_CREATED_EVENT', 'CONTAINER_STARTED_EVENT']) {
          call.write({ container_id: 'c1', container_event_type: type, created_at: '1732500000123456789' });
        }
        call.end();
      },
    } as grpc.UntypedServiceImplementation);
    server.addService(ImageService, {
      PullImage: (call: grpc.ServerUnaryCall<{ image: { image: string } | null; auth: { username: string } | null }, unknown>, done: grpc.sendUnaryData<unknown>) =>
        done(null, { image_ref: `${call.request.image?.image}@${call.request.auth?.username}` }),
    } as grpc.UntypedServiceImplementation);
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    client = criClient(socketPath);
  });

  after(async () => {
    client?.close();
    await new Promise<void>((resolve) => (server ? server.tryShutdown(() => resolve()) : resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('calls a unary RuntimeService RPC', async () => {
    const reply = await new Promise<{ version: string; runtime_name: string }>((resolve, reject) =>
      client.runtime.Version({ version: '0.1.0' }, (err, res) => (err || !res ? reject(err) : resolve(res))),
    );
    assert.equal(reply.version, '0.1.0');
    assert.equal(reply.runtime_name, 'test-server');
  });

  it('calls ImageService over the same channel', async () => {
    assert.ok(statSync(socketPath).isSocket());
    const reply = await new Promise<{ image_ref: string }>((resolve, reject) =>
      client.image.PullImage({ image: { image: 'busybox' }, auth: { username: 'robot' } }, (err, res) => (err || !res ? reject(err) : resolve(res))),
    );
    assert.equal(reply.image_ref, 'busybox@robot');
  });

  it('reads the GetContainerEvents server stream', async () => {
    const events: ContainerEventResponse__Output[] = [];
    await new Promise<void>((resolve, reject) => {
      const stream = client.runtime.GetContainerEvents({});
      stream.on('data', (event: ContainerEventResponse__Output) => events.push(event));
      stream.on('error', reject);
      stream.on('end', resolve);
    });
    assert.deepEqual(events.map((e) => e.container_event_type), ['CONTAINER_CREATED_EVENT', 'CONTAINER_STARTED_EVENT']);
    assert.equal(events[0]?.created_at, '1732500000123456789');
    assert.equal(events[0]?.pod_sandbox_status, null);
  });

  it('gets UNIMPLEMENTED for an RPC the server does not serve', async () => {
    const err = await new Promise<grpc.ServiceError>((resolve, reject) =>
      client.runtime.Status({}, (e) => (e ? resolve(e) : reject(new Error('Status unexpectedly succeeded')))),
    );
    assert.equal(err.code, grpc.status.UNIMPLEMENTED);
  });
});
