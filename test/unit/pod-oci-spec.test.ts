import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildOciSpec, containerArgs, containerCapabilities, containerEnv, containerUserRequest, DEFAULT_CAPABILITIES,
  DEFAULT_MASKED_PATHS, type OciSpecInput,
} from '../../src/pod/oci-spec.js';
import { parseImageUser, resolveUser } from '../../src/pod/user.js';
import { isPodvisorError } from '../../src/errors.js';
import { containerConfig, sandboxConfig } from '../helpers/pod-records.js';

const image = { Entrypoint: ['/entry'], Cmd: ['serve', '--port=80'], Env: ['PATH=/opt/bin:/bin', 'A=image'], WorkingDir: '/srv', User: '' };

test('command and args follow kubelet: command drops the image Cmd, args replace it', () => {
  assert.deepEqual(containerArgs({ command: [], args: [] }, image), ['/entry', 'serve', '--port=80']);
  assert.deepEqual(containerArgs({ command: ['/bin/sh'], args: [] }, image), ['/bin/sh']);
  assert.deepEqual(containerArgs({ command: [], args: ['x'] }, image), ['/entry', 'x']);
  assert.deepEqual(containerArgs({ command: ['/bin/sh'], args: ['-c', 'echo'] }, image), ['/bin/sh', '-c', 'echo']);
  assert.deepEqual(containerArgs({ command: [], args: [] }, { Cmd: ['sh'] }), ['sh']);
  assert.throws(() => containerArgs({ command: [], args: [] }, {}), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
});

test('env: defaults, then image, then config; later values replace in place', () => {
  const env = containerEnv({ envs: [{ key: 'A', value: 'config' }, { key: 'B', value: 'b=c' }] }, image, 'pod-host', '/root');
  assert.deepEqual(env, ['PATH=/opt/bin:/bin', 'HOSTNAME=pod-host', 'A=config', 'B=b=c', 'HOME=/root']);
  assert.deepEqual(containerEnv({ envs: [] }, {}, 'h'), ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOSTNAME=h']);
  assert.throws(() => containerEnv({ envs: [{ key: '', value: 'x' }] }, {}, 'h'), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
});

test('image USER forms parse', () => {
  assert.deepEqual(parseImageUser(''), { uid: 0 });
  assert.deepEqual(parseImageUser('nginx'), { username: 'nginx' });
  assert.deepEqual(parseImageUser('1000'), { uid: 1000 });
  assert.deepEqual(parseImageUser('1000:50'), { uid: 1000, gid: 50 });
  assert.deepEqual(parseImageUser('app:staff'), { username: 'app', groupname: 'staff' });
  assert.throws(() => parseImageUser('a:b:c'), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
});

const passwd = 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n';
const group = 'root:x:0:\nstaff:x:50:app\napp:x:1000:\nwheel:x:10:root,app\n';

test('users resolve against the image files: names, numeric ids, groups', () => {
  assert.deepEqual(resolveUser({ username: 'app', supplementalGroups: [] }, passwd, group),
    { uid: 1000, gid: 1000, additionalGids: [10, 50], home: '/home/app' });
  assert.deepEqual(resolveUser({ uid: 1000, groupname: 'staff', supplementalGroups: [7] }, passwd, group),
    { uid: 1000, gid: 50, additionalGids: [7, 10], home: '/home/app' });
  // A uid that is not in passwd runs with gid 0, as runc does.
  assert.deepEqual(resolveUser({ uid: 4242, supplementalGroups: [] }, passwd, group), { uid: 4242, gid: 0, additionalGids: [] });
  assert.deepEqual(resolveUser({ uid: 0, supplementalGroups: [] }, '', ''), { uid: 0, gid: 0, additionalGids: [] });
  assert.throws(() => resolveUser({ username: 'nobody', supplementalGroups: [] }, passwd, group), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /nobody/.test(e.message));
  assert.throws(() => resolveUser({ uid: 1, groupname: 'nope', supplementalGroups: [] }, passwd, group), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
});

test('the config security context wins over the image USER', () => {
  const img = { User: 'app:staff' };
  assert.deepEqual(containerUserRequest(containerConfig(), img), { supplementalGroups: [], uid: undefined, username: 'app', gid: undefined, groupname: 'staff' });
  const c = containerConfig();
  c.security.runAsUser = 33;
  assert.deepEqual(containerUserRequest(c, img), { supplementalGroups: [], uid: 33 });
  c.security.runAsGroup = 44;
  assert.deepEqual(containerUserRequest(c, img), { supplementalGroups: [], uid: 33, gid: 44 });
  const d = containerConfig();
  d.security.runAsUsername = 'www';
  assert.deepEqual(containerUserRequest(d, img), { supplementalGroups: [], username: 'www' });
  const e = containerConfig();
  e.security.runAsGroup = 44;
  assert.throws(() => containerUserRequest(e, img), (err) => isPodvisorError(err, 'INVALID_ARGUMENT') && /run_as_group is set without run_as_user/.test(err.message));
});

test('a numeric uid takes its primary gid and groups from the image files', () => {
  const passwd = 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:u:/home/user:/bin/sh\n';
  const group = 'root:x:0:\nuser:x:1000:\npredefined:x:50000:user\n';
  assert.deepEqual(resolveUser({ uid: 1000, supplementalGroups: [1234] }, passwd, group), {
    uid: 1000, gid: 1000, additionalGids: [1234, 50000], home: '/home/user',
  });
  assert.deepEqual(resolveUser({ uid: 4242, supplementalGroups: [] }, passwd, group), { uid: 4242, gid: 0, additionalGids: [] });
});

test('capabilities: defaults, add, drop, ALL', () => {
  assert.deepEqual(containerCapabilities([], [], false), DEFAULT_CAPABILITIES);
  const caps = containerCapabilities(['NET_ADMIN'], ['chown', 'CAP_KILL'], false);
  assert.ok(caps.includes('CAP_NET_ADMIN'));
  assert.ok(!caps.includes('CAP_CHOWN') && !caps.includes('CAP_KILL'));
  assert.deepEqual(containerCapabilities(['NET_BIND_SERVICE'], ['ALL'], false), ['CAP_NET_BIND_SERVICE']);
  const all = containerCapabilities(['ALL'], ['CHOWN'], false);
  assert.ok(all.includes('CAP_SYS_ADMIN') && !all.includes('CAP_CHOWN'));
  assert.throws(() => containerCapabilities(['FLY'], [], false), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
});

function input(over: Partial<OciSpecInput> = {}): OciSpecInput {
  return {
    containerId: 'c'.repeat(64),
    config: containerConfig({ tty: true, workingDir: '', envs: [{ key: 'X', value: '1' }] }),
    sandbox: sandboxConfig({ hostname: 'web-0' }),
    image,
    user: { uid: 1000, gid: 1000, additionalGids: [10], home: '/home/app' },
    rootfsPath: '/run/podvisor/containers/c/rootfs',
    sandboxFiles: { hostname: '/run/podvisor/sandbox/hostname', resolvConf: '/run/podvisor/sandbox/resolv.conf' },
    cgroupsPath: '/podvisor/c',
    ...over,
  };
}

test('the spec puts the pieces together', () => {
  const spec = buildOciSpec(input());
  assert.deepEqual(spec.process.args, ['/entry', 'serve', '--port=80']);
  assert.equal(spec.process.cwd, '/srv');
  assert.equal(spec.process.terminal, true);
  assert.deepEqual(spec.process.user, { uid: 1000, gid: 1000, additionalGids: [10] });
  assert.ok(spec.process.env.includes('X=1') && spec.process.env.includes('HOSTNAME=web-0'));
  assert.equal(spec.root.path, '/run/podvisor/containers/c/rootfs');
  assert.equal(spec.root.readonly, false);
  assert.deepEqual(spec.linux.namespaces.map((n) => n.type).sort(), ['cgroup', 'mount', 'pid']);
  assert.deepEqual(spec.linux.maskedPaths, DEFAULT_MASKED_PATHS);
  const resolv = spec.mounts.find((m) => m.destination === '/etc/resolv.conf');
  assert.equal(resolv?.source, '/run/podvisor/sandbox/resolv.conf');
  assert.equal(spec.mounts.find((m) => m.destination === '/etc/hosts'), undefined);
  assert.equal(spec.mounts.find((m) => m.destination === '/sys')?.options.includes('ro'), true);
});

test('readonly rootfs, resources, privileged and IPC/PID modes', () => {
  const c = containerConfig({ resources: { cpuPeriod: 100000, cpuQuota: 50000, cpuShares: 512, memoryLimitInBytes: 64 << 20, oomScoreAdj: 500, cpusetCpus: '', cpusetMems: '' } });
  c.security.readonlyRootfs = true;
  c.security.privileged = true;
  c.security.namespaceOptions = { network: 'POD', pid: 'TARGET', ipc: 'CONTAINER', targetId: 'x' };
  const spec = buildOciSpec(input({ config: c, pidNamespacePath: '/proc/77/ns/pid' }));
  assert.equal(spec.root.readonly, true);
  assert.deepEqual(spec.linux.resources.memory, { limit: 64 << 20 });
  assert.deepEqual(spec.linux.resources.cpu, { shares: 512, quota: 50000, period: 100000 });
  assert.equal(spec.process.oomScoreAdj, 500);
  assert.deepEqual(spec.linux.maskedPaths, []);
  assert.ok(spec.process.capabilities.bounding.includes('CAP_SYS_ADMIN'));
  assert.deepEqual(spec.linux.namespaces.find((n) => n.type === 'pid'), { type: 'pid', path: '/proc/77/ns/pid' });
  assert.ok(spec.linux.namespaces.some((n) => n.type === 'ipc'));
  assert.throws(() => buildOciSpec(input({ config: c })), (e) => isPodvisorError(e, 'UNIMPLEMENTED'));
});

test('what a VM cannot do is refused with a reason', () => {
  const host = containerConfig();
  host.security.namespaceOptions = { network: 'NODE', pid: 'CONTAINER', ipc: 'POD', targetId: '' };
  assert.throws(() => buildOciSpec(input({ config: host })), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /hostNetwork/.test(e.message));
  const mount = containerConfig({ mounts: [{ containerPath: '/data', hostPath: '/srv/data', readonly: false, selinuxRelabel: false, propagation: 'BIDIRECTIONAL' }] });
  assert.throws(() => buildOciSpec(input({ config: mount })), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /\/srv\/data -> \/data.*VM boundary/.test(e.message));
  const dev = containerConfig({ devices: [{ containerPath: '/dev/x', hostPath: '/dev/x', permissions: 'rwm' }] });
  assert.throws(() => buildOciSpec(input({ config: dev })), (e) => isPodvisorError(e, 'UNIMPLEMENTED'));
  assert.throws(() => buildOciSpec(input({ config: containerConfig({ workingDir: 'rel' }) })), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
});

test('hostUsers: false: a user namespace with the pod\'s mappings, the guest /sys bound read-only, no mqueue on the guest IPC', () => {
  const c = containerConfig();
  const range = { hostId: 196608, containerId: 0, length: 65536 };
  c.security.namespaceOptions = { network: 'POD', pid: 'CONTAINER', ipc: 'POD', targetId: '', userns: { uids: [range], gids: [range] } };
  const spec = buildOciSpec(input({ config: c }));
  assert.ok(spec.linux.namespaces.some((n) => n.type === 'user'));
  assert.deepEqual(spec.linux.uidMappings, [{ containerID: 0, hostID: 196608, size: 65536 }]);
  assert.deepEqual(spec.linux.gidMappings, [{ containerID: 0, hostID: 196608, size: 65536 }]);
  assert.equal(spec.mounts.find((m) => m.destination === '/sys')?.type, 'bind');
  assert.ok(!spec.mounts.some((m) => m.type === 'mqueue'));
  c.security.namespaceOptions.ipc = 'CONTAINER';
  assert.ok(buildOciSpec(input({ config: c })).mounts.some((m) => m.type === 'mqueue'), 'an own IPC namespace can mount mqueue');
  for (const bad of [
    { uids: [], gids: [range] },
    { uids: [range, { ...range, hostId: 1 }], gids: [range] },
    { uids: [{ ...range, length: 0 }], gids: [range] },
    { uids: [{ ...range, hostId: 2 ** 32 - 10 }], gids: [range] },
  ]) {
    c.security.namespaceOptions.userns = bad;
    assert.throws(() => buildOciSpec(input({ config: c })), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'), JSON.stringify(bad));
  }
  const plain = buildOciSpec(input());
  assert.ok(!plain.linux.namespaces.some((n) => n.type === 'user'));
  assert.equal(plain.linux.uidMappings, undefined);
});
