import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { isPodvisorError } from '../../src/errors.js';
import { sha256Digest } from '../../src/image/digest.js';
import { ImageService, type ImageServiceOptions } from '../../src/image/image-service.js';
import { validateRegistryConfig } from '../../src/image/registry-config.js';
import { pushImage, startFront, startRegistry, type RegistryFront, type TestRegistry } from '../helpers/registry.js';
import { tarOf, type Entry } from '../helpers/tar.js';
import { tempDirRemovedOnSignal } from '../helpers/signal-cleanup.js';

/**
 * Bad input from registries: a real docker-registry holds the images, and a small HTTP front in
 * this test injects the faults (altered bytes, 5xx, silence, 401 without a challenge, redirects).
 */
let reg: TestRegistry;
let front: RegistryFront;
let image: { manifestDigest: string; id: string };
let layerDigest: string;
const roots: string[] = [];

async function gzLayer(entries: Entry[]) {
  const tar = await tarOf(entries);
  return { data: gzipSync(tar), diffId: sha256Digest(tar), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' };
}

before(async () => {
  reg = await startRegistry();
  front = await startFront(reg);
  const layer = await gzLayer([{ name: 'hello', body: 'hello from a hand-made layer', mode: 0o644 }]);
  layerDigest = sha256Digest(layer.data);
  image = await pushImage(reg, 'faults/app', 'v1', [layer], { config: { Cmd: ['/hello'] } });
});
after(async () => {
  await front?.stop();
  await reg?.stop();
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

async function service(opts: Partial<ImageServiceOptions> = {}): Promise<ImageService> {
  const root = tempDirRemovedOnSignal('podvisor-images-');
  roots.push(root);
  const svc = new ImageService({ root, requestTimeoutMs: 3_000, requestAttempts: 3, retryBackoffMs: 20, ...opts });
  await svc.init();
  return svc;
}

/** Nothing of a failed pull is kept: no blobs, no temp files, no records, no disks, no unpack trees. */
async function assertNothingStored(svc: ImageService): Promise<void> {
  assert.deepEqual(await svc.store.list(), []);
  assert.deepEqual(readdirSync(svc.store.ingestDir), []);
  assert.deepEqual(readdirSync(svc.disksDir), []);
  assert.deepEqual(readdirSync(svc.unpackDir), []);
  assert.deepEqual(await svc.list(), []);
}

const viaFront = () => `${front.host}/faults/app:v1`;

describe('registry faults', () => {
  test('the front passes a clean pull through', async () => {
    front.rule = () => 'pass';
    const svc = await service();
    assert.equal(await svc.pull(viaFront()), image.id);
  });

  test('a layer whose bytes do not match its digest is refused and nothing is stored', async () => {
    front.rule = (req) => (req.url?.includes(`/blobs/${layerDigest}`) ? { transform: (b) => { const c = Buffer.from(b); c[c.length - 1] ^= 0xff; return c; } } : 'pass');
    const svc = await service();
    await assert.rejects(svc.pull(viaFront()), (e) => isPodvisorError(e, 'FAILED_PRECONDITION') && e.message.includes('digest mismatch') && e.message.includes(layerDigest));
    await assertNothingStored(svc);
  });

  test('a manifest whose bytes do not match the digest asked for is refused', async () => {
    front.rule = (req) => (req.url?.includes('/manifests/') ? { transform: (b) => Buffer.from(b.toString().replace('"schemaVersion":2', '"schemaVersion": 2')) } : 'pass');
    const svc = await service();
    await assert.rejects(svc.pull(`${front.host}/faults/app@${image.manifestDigest}`), (e) => isPodvisorError(e, 'FAILED_PRECONDITION') && e.message.includes('digest mismatch'));
    await assertNothingStored(svc);
  });

  test('transient 503s are retried with backoff', async () => {
    let failures = 0;
    front.rule = (req, res) => {
      if (req.url?.includes('/blobs/') && failures < 2) {
        failures++;
        res.writeHead(503).end('busy');
        return 'handled';
      }
      return 'pass';
    };
    const svc = await service();
    assert.equal(await svc.pull(viaFront()), image.id);
    assert.equal(failures, 2);
  });

  test('a blob download cut off midway starts again', async () => {
    let cut = 0;
    front.rule = (req, res) => {
      if (!req.url?.includes(`/blobs/${layerDigest}`) || cut > 0) return 'pass';
      cut++;
      // announce the whole blob, send a little of it, then drop the connection
      fetch(`${reg.url}${req.url}`).then(async (up) => {
        const body = Buffer.from(await up.arrayBuffer());
        res.writeHead(200, { 'content-length': String(body.length), 'content-type': 'application/octet-stream' });
        res.write(body.subarray(0, 10));
        setTimeout(() => res.socket?.destroy(), 50);
      }, () => res.destroy());
      return 'handled';
    };
    const svc = await service();
    assert.equal(await svc.pull(viaFront()), image.id);
    assert.equal(cut, 1);
    assert.deepEqual(readdirSync(svc.store.ingestDir), [], 'the broken attempt left no temp file');
  });

  test('a registry that keeps answering 5xx is UNAVAILABLE after the attempts', async () => {
    front.rule = (_req, res) => { res.writeHead(500).end('broken'); return 'handled'; };
    const svc = await service();
    await assert.rejects(svc.pull(viaFront()), (e) => isPodvisorError(e, 'UNAVAILABLE') && e.message.includes('500') && e.message.includes(front.host));
    await assertNothingStored(svc);
  });

  test('a 401 without credentials to answer it is UNAUTHENTICATED', async () => {
    front.rule = (_req, res) => { res.writeHead(401, { 'www-authenticate': 'Basic realm="faults"' }).end(); return 'handled'; };
    const svc = await service();
    await assert.rejects(svc.pull(viaFront()), (e) => isPodvisorError(e, 'UNAUTHENTICATED') && e.message.includes('requires a username and password'));
    await assert.rejects(svc.pull(viaFront(), { username: 'u', password: 'secret-pw' }),
      (e) => isPodvisorError(e, 'UNAUTHENTICATED') && !e.message.includes('secret-pw'));
  });

  test('a registry that never answers is DEADLINE_EXCEEDED', async () => {
    front.rule = () => 'handled'; // accept, say nothing
    const svc = await service({ requestTimeoutMs: 300, requestAttempts: 2 });
    await assert.rejects(svc.pull(viaFront()), (e) => isPodvisorError(e) && ['DEADLINE_EXCEEDED', 'UNAVAILABLE'].includes(e.code) && /no answer within 0.3 s/.test(e.message));
    await assertNothingStored(svc);
  });

  test('blob redirects are followed (as to a storage backend)', async () => {
    front.rule = (req, res) => {
      if (req.url?.includes('/blobs/')) {
        res.writeHead(307, { location: `${reg.url}${req.url}` }).end();
        return 'handled';
      }
      return 'pass';
    };
    const svc = await service();
    assert.equal(await svc.pull(viaFront()), image.id);
  });

  test('a 404 from a mirror falls through to the next endpoint', async () => {
    front.rule = (_req, res) => { res.writeHead(404).end(); return 'handled'; };
    const svc = await service({ registry: validateRegistryConfig({ mirrors: { 'faults.example': { endpoints: [front.url, reg.url] } } }) });
    assert.equal(await svc.pull('faults.example/faults/app:v1'), image.id);
  });
});

describe('malicious layers from a registry', () => {
  const cases: [string, (outside: string) => Entry[]][] = [
    ['dot-dot entry', () => [{ name: '../../../../../../tmp/podvisor-escape-test', body: 'x' }]],
    ['absolute symlink then a write through it', (o) => [{ name: 'evil', type: 'symlink', linkname: o }, { name: 'evil/pwned', body: 'x' }]],
    ['hard link out of the root', () => [{ name: 'h', type: 'link', linkname: '../../../../../etc/passwd' }]],
  ];
  for (const [label, entries] of cases) {
    test(`${label}: refused, nothing written outside, nothing kept`, async () => {
      const outside = mkdtempSync(join(tmpdir(), 'podvisor-outside-'));
      roots.push(outside);
      const repo = `malicious/${label.replace(/[^a-z]+/g, '-').replace(/-$/, '')}`;
      await pushImage(reg, repo, 'latest', [await gzLayer(entries(outside))]);
      const svc = await service();
      await assert.rejects(svc.pull(`${reg.host}/${repo}:latest`), (e) => isPodvisorError(e, 'FAILED_PRECONDITION') && e.message.includes('refusing entry'));
      assert.deepEqual(readdirSync(outside), []);
      assert.throws(() => readdirSync('/tmp/podvisor-escape-test'));
      await assertNothingStored(svc);
    });
  }

  test('a device node is skipped and the image still works', async () => {
    const svc = await service();
    const pushed = await pushImage(reg, 'malicious/device', 'latest', [await gzLayer([
      { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 },
      { name: 'ok', body: 'fine' },
    ])]);
    assert.equal(await svc.pull(`${reg.host}/malicious/device:latest`), pushed.id);
  });

  test('an image over the unpack limit is RESOURCE_EXHAUSTED and nothing is kept', async () => {
    const svc = await service({ maxUnpackedBytes: 64 * 1024 });
    await pushImage(reg, 'malicious/bomb', 'latest', [await gzLayer([{ name: 'zeros', body: '\0'.repeat(1 << 20) }])]);
    await assert.rejects(svc.pull(`${reg.host}/malicious/bomb:latest`), (e) => isPodvisorError(e, 'RESOURCE_EXHAUSTED') && e.message.includes('zeros'));
    await assertNothingStored(svc);
  });
});
