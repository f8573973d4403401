import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse } from 'smol-toml';
import { validateRegistryConfig } from '../../src/image/registry-config.js';
import { endpointsFor } from '../../src/image/registry-endpoints.js';
import { isPodvisorError } from '../../src/errors.js';

test('mirrors come from the TOML shape and are tried before the registry itself', () => {
  const toml = parse(`
[registry.mirrors."registry.k8s.io"]
endpoints = ["http://127.0.0.1:5000/", "https://mirror.example.com"]
[registry.mirrors."*"]
endpoints = ["http://10.0.0.1:5000"]
`);
  const config = validateRegistryConfig((toml as Record<string, unknown>).registry);
  assert.deepEqual(endpointsFor('registry.k8s.io', config).map((e) => [e.baseUrl, e.mirror]), [
    ['http://127.0.0.1:5000', true],
    ['https://mirror.example.com', true],
    ['https://registry.k8s.io', false],
  ]);
  assert.deepEqual(endpointsFor('docker.io', config).map((e) => e.baseUrl), ['http://10.0.0.1:5000', 'https://registry-1.docker.io']);
});

test('loopback and insecure registries are plain HTTP; others HTTPS', () => {
  const config = validateRegistryConfig({ insecure: ['reg.lan:5000'] });
  assert.deepEqual(endpointsFor('127.0.0.1:5050', config).map((e) => e.baseUrl), ['http://127.0.0.1:5050']);
  assert.deepEqual(endpointsFor('localhost:5000', config).map((e) => e.baseUrl), ['http://localhost:5000']);
  assert.deepEqual(endpointsFor('reg.lan:5000', config).map((e) => e.baseUrl), ['http://reg.lan:5000']);
  assert.deepEqual(endpointsFor('quay.io', config).map((e) => e.baseUrl), ['https://quay.io']);
});

test('a mirror entry naming the registry itself is not listed twice', () => {
  const config = validateRegistryConfig({ mirrors: { '127.0.0.1:5000': { endpoint: ['http://127.0.0.1:5000'] } } });
  assert.deepEqual(endpointsFor('127.0.0.1:5000', config), [{ baseUrl: 'http://127.0.0.1:5000', mirror: false }]);
});

test('bad registry sections are refused with the key that is wrong', () => {
  const bad: [unknown, string][] = [
    [{ mirror: {} }, 'registry.mirror is not a known setting'],
    [{ mirrors: { 'gcr.io': { endpoints: [] } } }, 'must list at least one URL'],
    [{ mirrors: { 'gcr.io': { endpoints: ['ftp://x'] } } }, 'must start with http:// or https://'],
    [{ mirrors: { 'gcr.io': { endpoints: ['not a url'] } } }, 'is not a URL'],
    [{ mirrors: { 'gcr.io': { endpoints: ['https://u:p@x'] } } }, 'credentials do not belong'],
    [{ mirrors: { 'gcr.io': { endpoints: 'https://x' } } }, 'must be a list'],
    [{ mirrors: { 'bad host/x': { endpoints: ['https://x'] } } }, 'is not a registry host'],
    [{ mirrors: { 'gcr.io': { endpoints: ['https://x'], tls: {} } } }, 'tls is not a known setting'],
    ['x', 'must be a table'],
  ];
  for (const [raw, fragment] of bad) {
    assert.throws(() => validateRegistryConfig(raw), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && e.message.includes(fragment), fragment);
  }
});
