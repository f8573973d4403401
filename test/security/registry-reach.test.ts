import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isPodvisorError } from '../../src/errors.js';
import { checkTarget, classifyAddress, policyFor } from '../../src/image/address-policy.js';
import { ImageService } from '../../src/image/image-service.js';
import { RegistryClient } from '../../src/image/registry-client.js';
import { manifestDeclaring, serveManifest, startRegistryStub } from './registry-stub.js';

/**
 * Registries are reached only where the operator allows, and images cost what
 * they declare (security review 2026-12-01): M3 (config and layer sizes
 * uncapped), M5 (redirects and token realms could point anywhere), L8 (the
 * registry's Authorization followed a same-host https→http redirect).
 */

const roots: string[] = [];
after(() => { for (const r of roots) rmSync(r, { recursive: true, force: true }); });

async function service(maxUnpackedBytes?: number): Promise<ImageService> {
  const root = mkdtempSync(join(tmpdir(), 'pv-sec-images-'));
  roots.push(root);
  const svc = new ImageService({ root, requestTimeoutMs: 3000, requestAttempts: 1, retryBackoffMs: 10, ...(maxUnpackedBytes ? { maxUnpackedBytes } : {}) });
  await svc.init();
  return svc;
}

test('M3: a 600 MiB image config is refused before it is downloaded', async () => {
  const reg = await startRegistryStub();
  try {
    const m = manifestDeclaring(600 << 20, [1000]);
    reg.handle = (req, res) => (req.url?.includes('/manifests/') ? serveManifest(res, m, req.method) : res.writeHead(500).end());
    await assert.rejects((await service()).pull(`${reg.host}/evil/app:v1`), (e) => isPodvisorError(e) && /image config .* declares 629145600 bytes/.test(e.message));
    assert.equal(reg.requests.filter((r) => r.url.includes('/blobs/')).length, 0, 'no blob was requested');
  } finally {
    await reg.stop();
  }
});

test('M3: layers declaring more than the image limit are refused before any download', async () => {
  const reg = await startRegistryStub();
  try {
    const m = manifestDeclaring(100, [2 ** 40]); // 1 TiB
    reg.handle = (req, res) => (req.url?.includes('/manifests/') ? serveManifest(res, m, req.method) : res.writeHead(500).end());
    await assert.rejects((await service(1 << 30)).pull(`${reg.host}/evil/app:v1`), (e) => isPodvisorError(e, 'RESOURCE_EXHAUSTED'));
    assert.equal(reg.requests.filter((r) => r.url.includes('/blobs/')).length, 0);
  } finally {
    await reg.stop();
  }
});

test('M5: a redirect or token realm at a link-local address (cloud metadata) is refused without connecting', async () => {
  const reg = await startRegistryStub();
  try {
    reg.handle = (_req, res) => { res.writeHead(307, { location: 'http://169.254.169.254/latest/meta-data/' }).end(); };
    await assert.rejects((await service()).pull(`${reg.host}/evil/app:v1`), (e) => isPodvisorError(e) && /169\.254\.169\.254.*link-local/.test(e.message));
    reg.handle = (_req, res) => { res.writeHead(401, { 'www-authenticate': 'Bearer realm="http://169.254.169.254/token",service="x"' }).end(); };
    await assert.rejects((await service()).pull(`${reg.host}/evil/app:v1`), (e) => isPodvisorError(e) && /link-local/.test(e.message));
  } finally {
    await reg.stop();
  }
});

test('M5: a public registry may not redirect or send its realm to loopback or private addresses, nor over plain http', () => {
  const publicRegistry = policyFor(new URL('https://registry.example.com/'), []);
  for (const target of ['http://127.0.0.1:8080/token', 'https://10.0.0.7/x', 'https://[::1]/x', 'https://localhost/x', 'https://192.168.1.1/x', 'https://100.64.0.1/x']) {
    assert.throws(() => checkTarget(publicRegistry, new URL(target), 'realm'), { code: 'PERMISSION_DENIED' }, target);
  }
  checkTarget(publicRegistry, new URL('https://auth.example.com/token'), 'realm');
  // A registry on the node or the private network may use its neighbours (air-gapped setups), or hosts the operator lists.
  checkTarget(policyFor(new URL('http://127.0.0.1:5000/'), []), new URL('http://127.0.0.1:5001/token'), 'realm');
  checkTarget(policyFor(new URL('https://registry.example.com/'), ['10.0.0.7']), new URL('https://10.0.0.7/x'), 'redirect');
  assert.throws(() => checkTarget(policyFor(new URL('http://127.0.0.1:5000/'), []), new URL('http://169.254.169.254/'), 'redirect'), { code: 'PERMISSION_DENIED' });
  assert.equal(classifyAddress('::ffff:169.254.169.254'), 'link-local');
  assert.equal(classifyAddress('fe80::1'), 'link-local');
  assert.equal(classifyAddress('8.8.8.8'), 'public');
});

test('M5: a plain-http realm named by an https registry is refused', async () => {
  // The realm check runs before any connection, so an unreachable https base is enough to reach it.
  const client = new RegistryClient({ baseUrl: 'https://registry.example.com', repository: 'x/y', attempts: 1 });
  const fetchToken = (client as unknown as { fetchToken(p: Record<string, string>): Promise<string> }).fetchToken.bind(client);
  await assert.rejects(fetchToken({ realm: 'http://auth.example.com/token' }), { code: 'PERMISSION_DENIED' });
});

test('L8: the registry\'s Authorization is sent only to the same scheme and host', () => {
  const client = new RegistryClient({ baseUrl: 'https://registry.example.com', repository: 'x/y' });
  const isRegistry = (client as unknown as { isRegistry(u: URL): boolean }).isRegistry.bind(client);
  assert.equal(isRegistry(new URL('https://registry.example.com/v2/x')), true);
  assert.equal(isRegistry(new URL('http://registry.example.com/v2/x')), false);
  assert.equal(isRegistry(new URL('https://storage.example.com/blob')), false);
});
