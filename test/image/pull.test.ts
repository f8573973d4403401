import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isPodvisorError } from '../../src/errors.js';
import { ImageService, type ImageServiceOptions } from '../../src/image/image-service.js';
import { validateRegistryConfig } from '../../src/image/registry-config.js';
import { gzipSync } from 'node:zlib';
import { sha256Digest } from '../../src/image/digest.js';
import { pushImage, pushTestImages, remoteDigest, remoteJson, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { tarOf } from '../helpers/tar.js';
import { tempDirRemovedOnSignal } from '../helpers/signal-cleanup.js';

/**
 * ImageService against a real Debian docker-registry on 127.0.0.1, with the project's test
 * images (hack/make-test-images). Each service gets its own root so conversions really run.
 */
let reg: TestRegistry;
const roots: string[] = [];
const work = tempDirRemovedOnSignal('podvisor-image-test-');

before(async () => {
  reg = await startRegistry();
  await pushTestImages(reg);
});
after(async () => {
  await reg?.stop();
  for (const r of roots) rmSync(r, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

async function service(opts: Partial<ImageServiceOptions> = {}): Promise<ImageService> {
  const root = tempDirRemovedOnSignal('podvisor-images-');
  roots.push(root);
  const svc = new ImageService({ root, requestTimeoutMs: 5_000, requestAttempts: 2, retryBackoffMs: 50, ...opts });
  await svc.init();
  return svc;
}

let extractCount = 0;
/** Unpacks an erofs disk with fsck.erofs so the test can look at what a container would see. */
function extract(disk: string): string {
  const out = join(work, `x${extractCount++}`);
  execFileSync('fsck.erofs', [`--extract=${out}`, disk]);
  return out;
}

const ref = (repoTag: string) => `${reg.host}/podvisor-test/${repoTag}`;

interface Manifest { config: { digest: string }; layers: { digest: string }[] }

describe('pulling from a real registry', () => {
  test('by tag: id is the config digest, tags and digests are recorded, the erofs disk holds the image', async () => {
    const svc = await service();
    const id = await svc.pull(ref('busybox:latest'));
    const manifest = await remoteJson<Manifest>(reg, 'podvisor-test/busybox', 'latest');
    assert.equal(id, manifest.config.digest);
    const info = await svc.status(ref('busybox:latest'));
    assert.ok(info);
    assert.deepEqual(info.repoTags, [ref('busybox:latest')]);
    assert.deepEqual(info.repoDigests, [`${reg.host}/podvisor-test/busybox@${await remoteDigest(reg, 'podvisor-test/busybox', 'latest')}`]);
    assert.ok(info.size > 1_000_000, `size ${info.size}`);
    assert.deepEqual(info.config.Cmd, ['sh']);
    assert.equal(info.uid, undefined);

    const disk = await svc.ensureDisk(id);
    assert.equal(disk, svc.diskPath(id));
    const tree = extract(disk);
    assert.ok(lstatSync(join(tree, 'bin/busybox')).isFile());
    assert.equal(readFileSync(join(tree, 'home/user/hello.txt'), 'utf8'), 'owned by 1000:1000\n');
    const hello = lstatSync(join(tree, 'home/user/hello.txt'));
    assert.deepEqual([hello.uid, hello.gid], [1000, 1000], 'ownership is not squashed');
    assert.equal(hello.mtime.toISOString(), '2020-02-02T02:02:02.000Z', 'mtime preserved');
    assert.equal(lstatSync(tree).mode & 0o777, 0o755, 'the image root is 0755');
    assert.equal(readdirSync(svc.unpackDir).length, 0, 'the unpacked tree is gone after conversion');
  });

  test('by digest, and tag@digest, give the same image', async () => {
    const svc = await service();
    const digest = await remoteDigest(reg, 'podvisor-test/busybox', 'latest');
    const byDigest = await svc.pull(`${reg.host}/podvisor-test/busybox@${digest}`);
    const info = await svc.get(`${reg.host}/podvisor-test/busybox@${digest}`);
    assert.equal(info?.id, byDigest);
    assert.deepEqual(info?.repoTags, [], 'a digest pull adds no tag');
    assert.equal(await svc.pull(`${reg.host}/podvisor-test/busybox:latest@${digest}`), byDigest);
  });

  for (const [tag, what] of [['docker', 'Docker schema 2 manifest'], ['zstd', 'zstd layers'], ['plain', 'uncompressed layers']]) {
    test(`${what} (busybox:${tag})`, async () => {
      const svc = await service();
      const id = await svc.pull(ref(`busybox:${tag}`));
      const tree = extract(await svc.ensureDisk(id));
      assert.ok(lstatSync(join(tree, 'bin/busybox')).isFile());
      assert.equal(readFileSync(join(tree, 'etc/passwd'), 'utf8').split('\n')[0], 'root:x:0:0:root:/root:/bin/sh');
    });
  }

  for (const tag of ['latest', 'list']) {
    test(`an index (multiarch:${tag}) resolves to linux/amd64 even when arm64 is listed first`, async () => {
      const svc = await service();
      const id = await svc.pull(ref(`multiarch:${tag}`));
      const amd = await remoteJson<Manifest>(reg, 'podvisor-test/multiarch', tag === 'latest' ? 'amd64' : 'amd64-docker');
      assert.equal(id, amd.config.digest);
      const info = await svc.get(ref(`multiarch:${tag}`));
      assert.equal(info?.repoDigests[0], `${reg.host}/podvisor-test/multiarch@${await remoteDigest(reg, 'podvisor-test/multiarch', tag)}`, 'repo digest is the index digest');
      const amdDigest = await remoteDigest(reg, 'podvisor-test/multiarch', tag === 'latest' ? 'amd64' : 'amd64-docker');
      assert.equal((await svc.get(`${reg.host}/podvisor-test/multiarch@${amdDigest}`))?.id, id, 'found by its platform manifest digest too');
      assert.ok(!existsSync(join(extract(await svc.ensureDisk(id)), 'ARCH-arm64')));
    });
  }

  test('a single-platform arm64 image is refused with a clear error', async () => {
    const svc = await service();
    await assert.rejects(svc.pull(ref('multiarch:arm64')), (e) => isPodvisorError(e, 'FAILED_PRECONDITION') && e.message.includes('linux/arm64'));
    assert.deepEqual(await svc.list(), []);
    assert.deepEqual(await svc.store.list(), [], 'nothing kept from a refused pull');
  });

  test('whiteouts across layers are applied in the disk', async () => {
    const svc = await service();
    const disk = await svc.ensureDisk(await svc.pull(ref('layers:latest')));
    const tree = extract(disk);
    const data = readdirSync(join(tree, 'data')).sort();
    assert.deepEqual(data, ['abs-symlink', 'keep', 'keep-hardlink', 'keep-new', 'keep-symlink', 'replaced', 'setuid']);
    assert.deepEqual(readdirSync(join(tree, 'data/replaced')), ['new']);
    // fsck.erofs --extract writes hard links as copies; dump.erofs shows the link count in the disk
    const dump = execFileSync('dump.erofs', ['--path=/data/keep-hardlink', disk]).toString();
    assert.match(dump, /Links: 2/, 'hard link kept');
  });

  test('status gives uid or username from the image config', async () => {
    const svc = await service();
    await svc.pull(ref('busybox:uid'));
    await svc.pull(ref('busybox:user'));
    const uid = await svc.status(ref('busybox:uid'));
    const user = await svc.status(ref('busybox:user'));
    assert.deepEqual([uid?.uid, uid?.username], [1234, undefined]);
    assert.deepEqual([user?.uid, user?.username], [undefined, 'www-data']);
    assert.equal(await svc.status(ref('busybox:nope')), undefined, 'a missing image is undefined, not an error');
  });

  test('list, filter, remove by tag / id / digest, garbage collection and fsInfo', async () => {
    const svc = await service();
    const busybox = await svc.pull(ref('busybox:latest'));
    const layers = await svc.pull(ref('layers:latest'));
    const uid = await svc.pull(ref('busybox:uid'));
    assert.deepEqual((await svc.list()).map((i) => i.id).sort(), [busybox, layers, uid].sort());
    assert.deepEqual((await svc.list({ image: ref('layers:latest') })).map((i) => i.id), [layers]);
    assert.deepEqual(await svc.list({ image: ref('nothing:here') }), []);
    const full = await svc.fsInfo();
    assert.ok(full.usedBytes > 3_000_000 && full.inodesUsed > 5, JSON.stringify(full, (_, v) => (typeof v === 'bigint' ? String(v) : v)));
    assert.equal(full.mountpoint, svc.dir);

    // the layers image shares its base layer with busybox: removing it keeps that blob
    const layersManifest = await remoteJson<Manifest>(reg, 'podvisor-test/layers', 'latest');
    const busyboxManifest = await remoteJson<Manifest>(reg, 'podvisor-test/busybox', 'latest');
    assert.equal(await svc.remove(ref('layers:latest')), true);
    assert.equal(await svc.get(layers), undefined);
    assert.ok(!existsSync(svc.diskPath(layers)));
    const blobs = new Set(await svc.store.list());
    assert.ok(blobs.has(busyboxManifest.layers[0]!.digest), 'shared layer kept');
    for (const l of layersManifest.layers.slice(1)) assert.ok(!blobs.has(l.digest), `own layer ${l.digest} collected`);
    assert.ok(!blobs.has(layersManifest.config.digest));

    assert.equal(await svc.remove(uid.slice('sha256:'.length, 'sha256:'.length + 12)), true, 'by id prefix');
    const digest = await remoteDigest(reg, 'podvisor-test/busybox', 'latest');
    assert.equal(await svc.remove(`${reg.host}/podvisor-test/busybox@${digest}`), true, 'by digest');
    assert.equal(await svc.remove(busybox), false, 'already gone');
    assert.deepEqual(await svc.list(), []);
    assert.deepEqual(await svc.store.list(), []);
    assert.deepEqual(readdirSync(svc.disksDir), []);
    const empty = await svc.fsInfo();
    assert.ok(empty.usedBytes < full.usedBytes / 10, `${empty.usedBytes} after remove vs ${full.usedBytes}`);
  });

  test('a tag pulled again after it moved in the registry moves to the new image', async () => {
    const svc = await service();
    const layer = async (text: string) => {
      const tar = await tarOf([{ name: 'version', body: text }]);
      return { data: gzipSync(tar), diffId: sha256Digest(tar), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' };
    };
    const v1 = await pushImage(reg, 'podvisor-test/moving', 'current', [await layer('one')]);
    assert.equal(await svc.pull(ref('moving:current')), v1.id);
    const v2 = await pushImage(reg, 'podvisor-test/moving', 'current', [await layer('two')]);
    assert.equal(await svc.pull(ref('moving:current')), v2.id);
    assert.deepEqual((await svc.get(v2.id))?.repoTags, [ref('moving:current')]);
    assert.deepEqual((await svc.get(v1.id))?.repoTags, [], 'the old image stays, untagged, reachable by id');
    assert.equal(readFileSync(join(extract(await svc.ensureDisk(v2.id)), 'version'), 'utf8'), 'two');
  });

  test('concurrent pulls of one image share one download and one conversion; a second pull transfers 0 bytes', async () => {
    const single = await service();
    await single.pull(ref('busybox:user'));
    const once = single.transfer.bytesReceived;
    assert.ok(once > 1_000_000);

    const svc = await service();
    const ids = await Promise.all([1, 2, 3, 4].map(() => svc.pull(ref('busybox:user'))));
    assert.equal(new Set(ids).size, 1);
    assert.equal(svc.transfer.bytesReceived, once, 'four concurrent pulls downloaded exactly one copy');
    const disks = await Promise.all([1, 2, 3].map(() => svc.ensureDisk(ids[0]!)));
    assert.equal(new Set(disks).size, 1);

    svc.transfer.reset();
    await svc.pull(ref('busybox:user'));
    assert.equal(svc.transfer.bytesReceived, 0, 'everything was already here');
    assert.ok(svc.transfer.requests >= 1, 'the tag was still resolved with the registry');
  });

  test('ensureDisk rebuilds a deleted disk from the stored blobs', async () => {
    const svc = await service();
    const id = await svc.pull(ref('busybox:latest'));
    rmSync(svc.diskPath(id));
    svc.transfer.reset();
    assert.ok(lstatSync(await svc.ensureDisk(id)).size > 1_000_000);
    assert.equal(svc.transfer.bytesReceived, 0);
  });
});

describe('mirrors', () => {
  test('registry.k8s.io pulled through a mirror keeps its own name', async () => {
    const svc = await service({ registry: validateRegistryConfig({ mirrors: { 'registry.k8s.io': { endpoints: [reg.url] } } }) });
    const id = await svc.pull('registry.k8s.io/podvisor-test/busybox:uid');
    const info = await svc.status('registry.k8s.io/podvisor-test/busybox:uid');
    assert.equal(info?.id, id);
    assert.deepEqual(info?.repoTags, ['registry.k8s.io/podvisor-test/busybox:uid']);
    assert.match(info!.repoDigests[0]!, /^registry\.k8s\.io\/podvisor-test\/busybox@sha256:/);
    assert.equal(info?.uid, 1234);
  });

  test('a dead mirror is skipped for the next endpoint', async () => {
    const svc = await service({
      requestAttempts: 1,
      registry: validateRegistryConfig({ mirrors: { 'gcr.io': { endpoints: ['http://127.0.0.1:1', reg.url] } } }),
    });
    const id = await svc.pull('gcr.io/podvisor-test/busybox:latest');
    assert.deepEqual((await svc.get(id))?.repoTags, ['gcr.io/podvisor-test/busybox:latest']);
  });

  test('a "*" mirror serves docker.io names', async () => {
    const svc = await service({ registry: validateRegistryConfig({ mirrors: { '*': { endpoints: [reg.url] } } }) });
    // docker.io/podvisor-test/busybox → the mirror's podvisor-test/busybox
    const id = await svc.pull('podvisor-test/busybox:latest');
    assert.deepEqual((await svc.get(id))?.repoTags, ['docker.io/podvisor-test/busybox:latest']);
    assert.equal((await svc.get('podvisor-test/busybox'))?.id, id, 'found again by its short name');
  });
});

describe('errors', () => {
  test('a missing image is NOT_FOUND and names the reference', async () => {
    const svc = await service();
    for (const missing of [ref('busybox:no-such-tag'), ref('no-such-repo:latest'), `${reg.host}/podvisor-test/busybox@sha256:${'0'.repeat(64)}`]) {
      await assert.rejects(svc.pull(missing), (e) => isPodvisorError(e, 'NOT_FOUND') && e.message.includes(missing), missing);
    }
    assert.deepEqual(await svc.store.list(), []);
  });

  test('an unreachable registry is UNAVAILABLE naming it', async () => {
    const svc = await service({ requestAttempts: 2 });
    await assert.rejects(svc.pull('127.0.0.1:1/x/y:z'), (e) => isPodvisorError(e, 'UNAVAILABLE') && e.message.includes('127.0.0.1:1') && e.message.includes('2 attempts'));
  });

  test('a bad reference is INVALID_ARGUMENT', async () => {
    const svc = await service();
    await assert.rejects(svc.pull('library/BusyBox'), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
    await assert.rejects(svc.ensureDisk('sha256:' + 'f'.repeat(64)), (e) => isPodvisorError(e, 'NOT_FOUND'));
  });
});
