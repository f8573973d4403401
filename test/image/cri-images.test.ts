import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import { join } from 'node:path';
import { startDaemon, unary, type RunningDaemon } from '../helpers/daemon.js';
import { pushTestImages, remoteDigest, startRegistry, type TestRegistry } from '../helpers/registry.js';

/**
 * The five ImageService RPCs end to end: a real podvisord on its unix socket, a real gRPC
 * client, a real docker-registry behind a `registry.k8s.io` mirror in the daemon's config.
 */
let reg: TestRegistry;
let guarded: TestRegistry;
let daemon: RunningDaemon;

before(async () => {
  reg = await startRegistry();
  await pushTestImages(reg);
  guarded = await startRegistry({ dataDir: join(reg.dir, 'data'), basicUsers: { kubelet: 'pull-secret-value' } });
  daemon = await startDaemon({
    logLevel: 'info',
    config: `[registry.mirrors."registry.k8s.io"]\nendpoints = ["${reg.url}"]\n`,
  });
});
after(async () => {
  await daemon?.dispose();
  await guarded?.stop();
  await reg?.stop();
});

const USER_IMAGE = 'registry.k8s.io/podvisor-test/busybox:user';
const UID_IMAGE = 'registry.k8s.io/podvisor-test/busybox:uid';
const image = () => daemon.client.image;

function grpcCode(e: unknown): number | undefined {
  return (e as ServiceError).code;
}

test('PullImage through the mirror returns the image id; ImageStatus keeps the original name and the username', async () => {
  const pulled = await unary(image(), 'PullImage', { image: { image: USER_IMAGE } });
  assert.match(pulled!.image_ref, /^sha256:[a-f0-9]{64}$/);
  const res = await unary(image(), 'ImageStatus', { image: { image: USER_IMAGE }, verbose: true });
  const img = res!.image!;
  assert.equal(img.id, pulled!.image_ref);
  assert.deepEqual(img.repo_tags, [USER_IMAGE]);
  assert.deepEqual(img.repo_digests, [`registry.k8s.io/podvisor-test/busybox@${await remoteDigest(reg, 'podvisor-test/busybox', 'user')}`]);
  assert.equal(img.username, 'www-data');
  assert.equal(img.uid, null);
  assert.ok(Number(img.size) > 1_000_000);
  const verbose = JSON.parse(res!.info.info!);
  assert.equal(verbose.imageSpec.config.User, 'www-data');
  assert.equal(verbose.imageSpec.rootfs.type, 'layers');
  assert.equal(verbose.chainID, verbose.imageSpec.rootfs.diff_ids[0], 'a one-layer image: chain id = its diff id');
});

test('ImageStatus gives uid for a numeric user, and is empty (not an error) for a missing image', async () => {
  await unary(image(), 'PullImage', { image: { image: UID_IMAGE } });
  const uid = await unary(image(), 'ImageStatus', { image: { image: UID_IMAGE } });
  assert.deepEqual([uid!.image!.uid?.value, uid!.image!.username], ['1234', '']);
  const missing = await unary(image(), 'ImageStatus', { image: { image: 'registry.k8s.io/podvisor-test/busybox:nope' } });
  assert.equal(missing!.image, null);
});

test('ListImages lists both, and filters by reference', async () => {
  const all = await unary(image(), 'ListImages', {});
  assert.deepEqual(all!.images.map((i) => i.repo_tags[0]).sort(), [UID_IMAGE, USER_IMAGE].sort());
  const one = await unary(image(), 'ListImages', { filter: { image: { image: UID_IMAGE } } });
  assert.deepEqual(one!.images.map((i) => i.repo_tags[0]), [UID_IMAGE]);
});

test('ImageFsInfo reports the image store under the root', async () => {
  const res = await unary(image(), 'ImageFsInfo', {});
  const fs = res!.image_filesystems[0]!;
  assert.equal(fs.fs_id!.mountpoint, `${daemon.root}/images`);
  assert.ok(Number(fs.used_bytes!.value) > 2_000_000);
  assert.ok(Number(fs.inodes_used!.value) > 5);
  assert.ok(BigInt(fs.timestamp) > 1_600_000_000_000_000_000n, 'nanoseconds');
});

test('PullImage of a missing image is NOT_FOUND naming it; an empty one INVALID_ARGUMENT', async () => {
  const missing = 'registry.k8s.io/podvisor-test/no-such-image:1.0';
  await assert.rejects(unary(image(), 'PullImage', { image: { image: missing } }),
    (e) => grpcCode(e) === grpcStatus.NOT_FOUND && (e as ServiceError).details.includes(missing));
  await assert.rejects(unary(image(), 'PullImage', { image: { image: '' } }), (e) => grpcCode(e) === grpcStatus.INVALID_ARGUMENT);
});

test('RemoveImage by tag removes the image; removing it again succeeds', async () => {
  await unary(image(), 'RemoveImage', { image: { image: USER_IMAGE } });
  const res = await unary(image(), 'ImageStatus', { image: { image: USER_IMAGE } });
  assert.equal(res!.image, null);
  await unary(image(), 'RemoveImage', { image: { image: USER_IMAGE } });
  const id = (await unary(image(), 'ImageStatus', { image: { image: UID_IMAGE } }))!.image!.id;
  await unary(image(), 'RemoveImage', { image: { image: id } });
  assert.deepEqual((await unary(image(), 'ListImages', {}))!.images, []);
});

test('PullImage passes the AuthConfig to the registry; without it the answer is UNAUTHENTICATED', async () => {
  const ref = `${guarded.host}/podvisor-test/busybox:uid`;
  await assert.rejects(unary(image(), 'PullImage', { image: { image: ref } }), (e) => grpcCode(e) === grpcStatus.UNAUTHENTICATED);
  await assert.rejects(unary(image(), 'PullImage', { image: { image: ref }, auth: { username: 'kubelet', password: 'wrong' } }),
    (e) => grpcCode(e) === grpcStatus.UNAUTHENTICATED && !(e as ServiceError).details.includes('wrong'));
  const res = await unary(image(), 'PullImage', { image: { image: ref }, auth: { username: 'kubelet', password: 'pull-secret-value' } });
  assert.match(res!.image_ref, /^sha256:/);
  assert.ok(!daemon.output().includes('pull-secret-value'), 'the secret never reaches the daemon log');
  await unary(image(), 'RemoveImage', { image: { image: ref } });
});
