import { test } from 'node:test';
import assert from 'node:assert/strict';
import { credentialsFrom, parseChallenges } from '../../src/image/auth.js';
import { isPodvisorError } from '../../src/errors.js';

test('WWW-Authenticate challenges parse with quoted and bare values', () => {
  const c = parseChallenges('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push", Basic realm=x');
  assert.equal(c.length, 2);
  assert.equal(c[0]!.scheme, 'bearer');
  assert.deepEqual(c[0]!.params, { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:a/b:pull,push' });
  assert.deepEqual(c[1], { scheme: 'basic', params: { realm: 'x' } });
  assert.deepEqual(parseChallenges('Basic realm="Registry Realm"'), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
});

test('CRI AuthConfig fields map to credentials, most specific first', () => {
  assert.equal(credentialsFrom(undefined), undefined);
  assert.equal(credentialsFrom({}), undefined);
  assert.deepEqual(credentialsFrom({ username: 'u', password: 'p' }), { kind: 'basic', username: 'u', password: 'p' });
  assert.deepEqual(credentialsFrom({ auth: Buffer.from('u:p:q').toString('base64') }), { kind: 'basic', username: 'u', password: 'p:q' });
  assert.deepEqual(credentialsFrom({ identityToken: 'r', username: 'u' }), { kind: 'identity', username: 'u', refreshToken: 'r' });
  assert.deepEqual(credentialsFrom({ registryToken: 't', username: 'u', password: 'p' }), { kind: 'registry', token: 't' });
});

test('a malformed auth blob is refused without echoing it', () => {
  const secret = Buffer.from('no-colon-secret').toString('base64');
  assert.throws(() => credentialsFrom({ auth: secret }), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && !e.message.includes(secret) && !e.message.includes('no-colon-secret'));
});
