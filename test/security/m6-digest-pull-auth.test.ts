import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { isPodvisorError } from '../../src/errors.js';
import { sha256Digest } from '../../src/image/digest.js';
import { ImageService } from '../../src/image/image-service.js';
import { pushImage, remoteDigest, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { tarOf } from '../helpers/tar.js';

/**
 * M6 (security review 2026-12-01): a pull by digest of an image already in
 * the store contacted no registry, so a pull without credentials was served a
 * private image another pull had fetched with them. Like containerd's
 * resolver, a digest pull now asks the registry (HEAD) with its own
 * credentials; `registry.trust_cached_digests` turns that off for air-gapped
 * nodes. Real docker-registry instances with Basic auth.
 */
let open: TestRegistry;
let basic: TestRegistry;
let digest: string;
const roots: string[] = [];

before(async () => {
  open = await startRegistry();
  const tar = await tarOf([{ name: 'secret.txt', body: 'private' }]);
  await pushImage(open, 'private/app', 'v1', [{ data: gzipSync(tar), diffId: sha256Digest(tar), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }]);
  digest = await remoteDigest(open, 'private/app', 'v1');
  basic = await startRegistry({ dataDir: join(open.dir, 'data'), basicUsers: { bob: 'builder-secret' } });
});
after(async () => {
  await basic?.stop();
  await open?.stop();
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

async function service(trustCachedDigests = false): Promise<ImageService> {
  const root = mkdtempSync(join(tmpdir(), 'pv-sec-m6-'));
  roots.push(root);
  const svc = new ImageService({ root, requestTimeoutMs: 5000, requestAttempts: 1, retryBackoffMs: 10, registry: { mirrors: {}, insecure: [], trustCachedDigests } });
  await svc.init();
  return svc;
}

test('M6: a stored private image is not served to a digest pull without credentials', async () => {
  const svc = await service();
  const ref = `${basic.host}/private/app@${digest}`;
  const id = await svc.pull(ref, { username: 'bob', password: 'builder-secret' });
  await assert.rejects(svc.pull(ref), (e) => isPodvisorError(e, 'UNAUTHENTICATED'));
  await assert.rejects(svc.pull(ref, { username: 'bob', password: 'wrong' }), (e) => isPodvisorError(e, 'UNAUTHENTICATED'));
  assert.equal(await svc.pull(ref, { username: 'bob', password: 'builder-secret' }), id);
});

test('M6: registry.trust_cached_digests serves stored digests without asking (air-gapped nodes)', async () => {
  const svc = await service(true);
  const ref = `${basic.host}/private/app@${digest}`;
  const id = await svc.pull(ref, { username: 'bob', password: 'builder-secret' });
  assert.equal(await svc.pull(ref), id);
});
