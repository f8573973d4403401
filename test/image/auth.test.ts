import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { isPodvisorError } from '../../src/errors.js';
import { sha256Digest } from '../../src/image/digest.js';
import { ImageService } from '../../src/image/image-service.js';
import { pushImage, startRegistry, startTokenServer, type TestRegistry, type TokenServer } from '../helpers/registry.js';
import { tarOf } from '../helpers/tar.js';
import { tempDirRemovedOnSignal } from '../helpers/signal-cleanup.js';

/**
 * Registry auth against real docker-registry instances. Bearer tokens: `auth: token` mode. The registry verifies
 * the JWTs itself (RS256, certificate chain in x5c checked against its rootcertbundle); the token
 * server here checks Basic credentials and OAuth2 refresh tokens. Basic: `auth: htpasswd` mode.
 * Images are pushed to an open registry that shares its storage with the protected ones.
 */
let open: TestRegistry;
let guarded: TestRegistry;
let tokens: TokenServer;
let basic: TestRegistry;
let id: string;
const roots: string[] = [];
const PASSWORD = 'wonderland-secret';

before(async () => {
  open = await startRegistry();
  const tar = await tarOf([{ name: 'private.txt', body: 'only for alice' }]);
  ({ id } = await pushImage(open, 'private/app', 'v1', [{ data: gzipSync(tar), diffId: sha256Digest(tar), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }]));
  tokens = await startTokenServer({ alice: PASSWORD }, { 'refresh-token-for-alice': 'alice' });
  guarded = await startRegistry({
    dataDir: join(open.dir, 'data'),
    token: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, certFile: tokens.certFile },
  });
  basic = await startRegistry({ dataDir: join(open.dir, 'data'), basicUsers: { bob: 'builder-secret' } });
});
after(async () => {
  await basic?.stop();
  await guarded?.stop();
  await open?.stop();
  await tokens?.stop();
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

async function service(): Promise<ImageService> {
  const root = tempDirRemovedOnSignal('podvisor-images-');
  roots.push(root);
  const svc = new ImageService({ root, requestTimeoutMs: 5_000, requestAttempts: 2, retryBackoffMs: 20 });
  await svc.init();
  return svc;
}

const image = () => `${guarded.host}/private/app:v1`;

test('the registry really demands a token', async () => {
  const res = await fetch(`${guarded.url}/v2/private/app/manifests/v1`);
  assert.equal(res.status, 401);
  assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer realm=/);
});

test('anonymous pulls are refused with UNAUTHENTICATED', async () => {
  const svc = await service();
  await assert.rejects(svc.pull(image()), (e) => isPodvisorError(e, 'UNAUTHENTICATED') && e.message.includes('anonymous access'));
  assert.deepEqual(await svc.store.list(), []);
});

test('a wrong password is UNAUTHENTICATED and the password is not in the message', async () => {
  const svc = await service();
  // a right password first: its cached token must not serve the wrong one afterwards
  assert.equal(await svc.pull(image(), { username: 'alice', password: PASSWORD }), id);
  await svc.remove(id);
  await assert.rejects(svc.pull(image(), { username: 'alice', password: 'not-the-password' }),
    (e) => isPodvisorError(e, 'UNAUTHENTICATED') && e.message.includes('refused the credentials') && !e.message.includes('not-the-password'));
});

test('username and password get a bearer token; it is reused for the next pull', async () => {
  const svc = await service();
  assert.equal(await svc.pull(image(), { username: 'alice', password: PASSWORD }), id);
  assert.ok(tokens.issued.basic >= 1, 'a token was issued for the Basic credentials');
  const issued = tokens.issued.basic;
  const again = await service();
  assert.equal(await again.pull(image(), { username: 'alice', password: PASSWORD }), id);
  assert.equal(tokens.issued.basic, issued, 'the cached token was reused');
});

test('the docker-config "auth" field works like username/password', async () => {
  const svc = await service();
  assert.equal(await svc.pull(image(), { auth: Buffer.from(`alice:${PASSWORD}`).toString('base64') }), id);
});

test('an identity token is exchanged with the OAuth2 refresh-token grant', async () => {
  const before = tokens.issued.refresh;
  const svc = await service();
  assert.equal(await svc.pull(image(), { identityToken: 'refresh-token-for-alice' }), id);
  assert.equal(tokens.issued.refresh, before + 1);
  await assert.rejects((await service()).pull(image(), { identityToken: 'stolen' }), (e) => isPodvisorError(e, 'UNAUTHENTICATED') && !e.message.includes('stolen'));
});

test('a registry token is sent as the bearer token directly', async () => {
  const svc = await service();
  const before = { ...tokens.issued };
  assert.equal(await svc.pull(image(), { registryToken: tokens.issue('private/app', 'alice') }), id);
  assert.deepEqual(tokens.issued, before, 'the token server was not asked');
  await assert.rejects((await service()).pull(image(), { registryToken: 'garbage' }), (e) => isPodvisorError(e, 'UNAUTHENTICATED'));
});

test('Basic auth (htpasswd registry): refused without or with wrong credentials, served with the right ones', async () => {
  const ref = `${basic.host}/private/app:v1`;
  await assert.rejects((await service()).pull(ref), (e) => isPodvisorError(e, 'UNAUTHENTICATED') && e.message.includes('requires a username and password'));
  await assert.rejects((await service()).pull(ref, { username: 'bob', password: 'wrong-one' }),
    (e) => isPodvisorError(e, 'UNAUTHENTICATED') && !e.message.includes('wrong-one'));
  assert.equal(await (await service()).pull(ref, { username: 'bob', password: 'builder-secret' }), id);
  assert.equal(await (await service()).pull(ref, { auth: Buffer.from('bob:builder-secret').toString('base64') }), id);
});
