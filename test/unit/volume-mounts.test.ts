import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isPodvisorError } from '../../src/errors.js';
import { buildOciSpec } from '../../src/pod/oci-spec.js';
import type { Mount } from '../../src/pod/records.js';
import { ociVolumeMount, validateMounts } from '../../src/pod/volume-mounts.js';
import { remountOptions } from '../../src/volume/share-dir.js';
import { virtiofsdArgs } from '../../src/volume/virtiofsd.js';
import { containerConfig, sandboxConfig } from '../helpers/pod-records.js';

const m = (over: Partial<Mount>): Mount => ({ containerPath: '/data', hostPath: '/srv/data', readonly: false, selinuxRelabel: false, propagation: 'PRIVATE', ...over });
const refused = (mounts: Mount[], code: string, pattern: RegExp) =>
  assert.throws(() => validateMounts(containerConfig({ mounts })), (e) => isPodvisorError(e, code as never) && pattern.test(e.message));

test('mounts podvisor cannot honour are refused before anything is made, saying why', () => {
  refused([m({ propagation: 'BIDIRECTIONAL' })], 'INVALID_ARGUMENT', /bidirectional .* cannot cross the pod VM boundary/);
  refused([m({ containerPath: 'rel' })], 'INVALID_ARGUMENT', /container_path must be an absolute path/);
  refused([m({ containerPath: '/' })], 'INVALID_ARGUMENT', /over the container's root/);
  refused([m({}), m({ containerPath: '/data/' })], 'INVALID_ARGUMENT', /another mount already uses \/data/);
  refused([m({ hostPath: 'relative' })], 'INVALID_ARGUMENT', /host_path must be an absolute path/);
  refused([m({ idMapped: true })], 'UNIMPLEMENTED', /id-mapped/);
  refused([m({ recursiveReadOnly: true })], 'INVALID_ARGUMENT', /recursive_read_only needs readonly/);
  refused([m({ hostPath: '', image: 'busybox', imageSubPath: '../etc' })], 'INVALID_ARGUMENT', /image_sub_path/);
  refused([m({ hostPath: '', image: 'busybox', imageSubPath: '/etc' })], 'INVALID_ARGUMENT', /image_sub_path/);
  refused([m({ image: 'busybox' })], 'INVALID_ARGUMENT', /either an image or a host_path/);
  assert.throws(() => validateMounts(containerConfig({ devices: [{ containerPath: '/dev/x', hostPath: '/dev/sda', permissions: 'rwm' }] })),
    (e) => isPodvisorError(e, 'UNIMPLEMENTED') && /no safe passthrough model/.test(e.message));
  validateMounts(containerConfig({ mounts: [m({ readonly: true, recursiveReadOnly: true, propagation: 'HOST_TO_CONTAINER' }), m({ containerPath: '/img', hostPath: '', image: 'busybox', imageSubPath: 'etc/ssl' })] }));
});

test('OCI bind mounts carry ro/rw, propagation and rro; image volumes are always read-only', () => {
  assert.deepEqual(ociVolumeMount({ mount: m({}), guestSource: '/run/podvisor/shared/c/0' }),
    { destination: '/data', type: 'bind', source: '/run/podvisor/shared/c/0', options: ['rbind', 'rw', 'rprivate', 'nosuid', 'nodev'] });
  assert.deepEqual(ociVolumeMount({ mount: m({ readonly: true, recursiveReadOnly: true, propagation: 'HOST_TO_CONTAINER', containerPath: '/x/' }), guestSource: '/s' }).options,
    ['rbind', 'ro', 'rslave', 'nosuid', 'nodev', 'rro']);
  assert.equal(ociVolumeMount({ mount: m({ image: 'busybox', hostPath: '' }), guestSource: '/run/podvisor/images/x/etc' }).options[1], 'ro');
});

test("a CRI mount on /etc/hosts replaces the sandbox's own file", () => {
  const spec = buildOciSpec({
    containerId: 'c1', config: containerConfig({ command: ['true'] }), sandbox: sandboxConfig(), image: {}, user: { uid: 0, gid: 0, additionalGids: [] },
    rootfsPath: '/r', sandboxFiles: { hosts: '/etc/hosts', hostname: '/etc/hostname' }, cgroupsPath: '/p/c1',
    volumes: [{ destination: '/etc/hosts', type: 'bind', source: '/run/podvisor/shared/c1/0', options: ['rbind', 'rw'] }],
  });
  assert.deepEqual(spec.mounts.filter((x) => x.destination === '/etc/hosts').map((x) => x.source), ['/run/podvisor/shared/c1/0']);
  assert.ok(spec.mounts.some((x) => x.destination === '/etc/hostname'));
});

test('bind remounts keep the flags a mount already has and add nosuid, nodev and ro', () => {
  assert.equal(remountOptions(['rw', 'relatime'], false), 'remount,bind,rw,relatime,nosuid,nodev');
  assert.equal(remountOptions(['ro', 'noexec'], false), 'remount,bind,ro,noexec,nosuid,nodev');
  assert.equal(remountOptions(['rw', 'nosuid'], true), 'remount,bind,ro,nosuid,nodev');
});

test('virtiofsd always runs in its namespace sandbox with reduced capabilities', () => {
  const args = virtiofsdArgs({ socket: '/s/fs.sock', source: '/v/shared' });
  assert.ok(args.includes('sandbox=namespace'));
  assert.ok(!args.some((a) => /sandbox=(none|chroot)/.test(a)));
  assert.ok(args.includes('modcaps=-mknod:-setfcap'));
  assert.ok(args.includes('no_xattr'));
  assert.ok(args.includes('source=/v/shared'));
});
