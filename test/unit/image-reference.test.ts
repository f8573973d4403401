import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatReference, parseReference } from '../../src/image/reference.js';
import { chainId, sha256Digest } from '../../src/image/digest.js';
import { isPodvisorError } from '../../src/errors.js';

const D = 'sha256:' + 'a'.repeat(64);

test('references normalise like containerd', () => {
  const cases: [string, string][] = [
    ['busybox', 'docker.io/library/busybox:latest'],
    ['busybox:1.36', 'docker.io/library/busybox:1.36'],
    ['library/busybox', 'docker.io/library/busybox:latest'],
    ['index.docker.io/library/busybox', 'docker.io/library/busybox:latest'],
    ['user/app:v1', 'docker.io/user/app:v1'],
    ['registry.k8s.io/pause:3.9', 'registry.k8s.io/pause:3.9'],
    ['localhost/app', 'localhost/app:latest'],
    ['127.0.0.1:5000/podvisor-test/busybox', '127.0.0.1:5000/podvisor-test/busybox:latest'],
    [`busybox@${D}`, `docker.io/library/busybox@${D}`],
    [`gcr.io/a/b:tag@${D}`, `gcr.io/a/b:tag@${D}`],
  ];
  for (const [input, want] of cases) assert.equal(formatReference(parseReference(input)), want, input);
});

test('a digest-only reference has no tag; a plain one gets latest', () => {
  assert.equal(parseReference(`busybox@${D}`).tag, undefined);
  assert.equal(parseReference('busybox').tag, 'latest');
  const r = parseReference('127.0.0.1:5000/x/y:1');
  assert.deepEqual([r.domain, r.path, r.tag], ['127.0.0.1:5000', 'x/y', '1']);
});

test('bad references are INVALID_ARGUMENT naming the problem', () => {
  for (const [input, fragment] of [
    ['', 'empty'],
    ['Busybox', 'lowercase'],
    ['busybox@sha256:abc', 'not a digest'],
    ['busybox:bad tag', 'tag'],
    ['registry.k8s.io/', 'empty'],
    ['a//b', 'path component'],
  ] as const) {
    assert.throws(() => parseReference(input), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && e.message.includes(fragment), input);
  }
});

test('chain ids follow the OCI definition', () => {
  const a = sha256Digest('a');
  const b = sha256Digest('b');
  assert.equal(chainId([]), undefined);
  assert.equal(chainId([a]), a);
  assert.equal(chainId([a, b]), sha256Digest(`${a} ${b}`));
});
