import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadCniNetwork } from '../../src/network/cni-config.js';
import { parseCniResult } from '../../src/network/cni-result.js';
import { bitsPerSecond, cniArgs, runtimeConfigFor, type PodNetworkRequest } from '../../src/network/pod-runtime-config.js';
import { guestNic } from '../../src/pod/sandbox-network.js';

const dir = mkdtempSync(join(tmpdir(), 'pv-cni-unit-'));
const bin = join(dir, 'bin');
mkdirSync(bin);
for (const p of ['bridge', 'portmap']) {
  writeFileSync(join(bin, p), '#!/bin/sh\n');
  chmodSync(join(bin, p), 0o755);
}
after(() => rmSync(dir, { recursive: true, force: true }));

function confDir(files: Record<string, unknown>): string {
  const d = mkdtempSync(join(dir, 'conf-'));
  for (const [name, doc] of Object.entries(files)) writeFileSync(join(d, name), typeof doc === 'string' ? doc : JSON.stringify(doc));
  return d;
}

const pod: PodNetworkRequest = { sandboxId: 'sb1', name: 'web', namespace: 'default', uid: 'u-1', portMappings: [], annotations: {} };

describe('CNI config folder', () => {
  it('takes the first valid file in lexical order and skips broken ones', () => {
    const d = confDir({
      '05-bad.conflist': '{not json',
      '10-net.conflist': { cniVersion: '1.0.0', name: 'net', plugins: [{ type: 'bridge' }, { type: 'portmap' }] },
      '20-other.conflist': { cniVersion: '1.0.0', name: 'other', plugins: [{ type: 'bridge' }] },
    });
    const s = loadCniNetwork(d, [join(dir, 'nowhere'), bin]);
    assert.ok(s.ready);
    assert.equal(s.network.list.name, 'net');
    assert.equal(s.network.binaries.portmap, join(bin, 'portmap'));
  });
  it('wraps a single-plugin .conf into a list', () => {
    const s = loadCniNetwork(confDir({ '10.conf': { cniVersion: '0.4.0', name: 'single', type: 'bridge' } }), [bin]);
    assert.ok(s.ready && s.network.list.plugins.length === 1 && s.network.list.cniVersion === '0.4.0');
  });
  it('says why when nothing is usable, naming the folder', () => {
    const none = loadCniNetwork(join(dir, 'missing'), [bin]);
    assert.ok(!none.ready && !none.present && none.message.includes(join(dir, 'missing')));
    const d = confDir({ 'a.conflist': { cniVersion: '9.9.9', name: 'x', plugins: [{ type: 'bridge' }] }, 'b.conflist': { cniVersion: '1.0.0', name: 'y', plugins: [{ type: '../bridge' }] } });
    const bad = loadCniNetwork(d, [bin]);
    assert.ok(!bad.ready && bad.present);
    assert.match(bad.message, /a\.conflist: cniVersion "9\.9\.9"/);
    assert.match(bad.message, /b\.conflist: plugin type "\.\.\/bridge"/);
  });
});

describe('pod runtime config', () => {
  it('CNI_ARGS carry the pod identity', () => {
    assert.equal(cniArgs(pod), 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=u-1');
    assert.throws(() => cniArgs({ ...pod, name: 'a;b' }), { code: 'INVALID_ARGUMENT' });
  });
  it('capabilities: host ports only, dns, pod CIDR, bandwidth annotations', () => {
    const rc = runtimeConfigFor({
      ...pod,
      portMappings: [{ protocol: 'TCP', containerPort: 80, hostPort: 8080, hostIp: '' }, { protocol: 'UDP', containerPort: 53, hostPort: 0, hostIp: '' }],
      dns: { servers: ['10.0.0.10'], searches: ['svc.local'], options: ['ndots:5'] },
      annotations: { 'kubernetes.io/ingress-bandwidth': '10M', 'kubernetes.io/egress-bandwidth': '1Mi' },
    }, '10.244.1.0/24');
    assert.deepEqual(rc, {
      portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }],
      dns: { servers: ['10.0.0.10'], searches: ['svc.local'], options: ['ndots:5'] },
      ipRanges: [[{ subnet: '10.244.1.0/24' }]],
      bandwidth: { ingressRate: 10_000_000, ingressBurst: 2_147_483_647, egressRate: 1_048_576, egressBurst: 2_147_483_647 },
    });
    assert.deepEqual(runtimeConfigFor(pod, ''), {});
    assert.throws(() => bitsPerSecond('x', '10 mbit'), { code: 'INVALID_ARGUMENT' });
  });
});

describe('CNI result', () => {
  const result = {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'cni0', mac: 'aa:aa:aa:aa:aa:aa' }, { name: 'veth1', mac: 'bb:bb:bb:bb:bb:bb' }, { name: 'eth0', mac: 'CC:CC:CC:CC:CC:01', sandbox: '/ns' }],
    ips: [
      { address: 'fd00::5/64', gateway: 'fd00::1', interface: 2 },
      { address: '10.1.0.5/24', gateway: '10.1.0.1', interface: 2 },
      { address: '10.9.9.9/24', interface: 0 },
    ],
    routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }, { dst: '192.168.0.0/16', gw: '10.1.0.254' }],
  };
  it('keeps the sandbox interface addresses, IPv4 first, and its MAC', () => {
    const a = parseCniResult(result, 'eth0', '/ns');
    assert.equal(a.mac, 'cc:cc:cc:cc:cc:01');
    assert.deepEqual(a.addresses.map((x) => x.cidr), ['10.1.0.5/24', 'fd00::5/64']);
    assert.throws(() => parseCniResult({ ...result, ips: [] }, 'eth0', '/ns'), /no IP address/);
  });
  it('routes without a gateway go via the gateway of their family', () => {
    const nic = guestNic({ networkName: 'n', netns: '/ns', tap: { name: 't', mac: 'cc:cc:cc:cc:cc:01' }, mtu: 1450, attachment: parseCniResult(result, 'eth0', '/ns') });
    assert.deepEqual(nic.routes, [
      { destination: '0.0.0.0/0', gateway: '10.1.0.1' },
      { destination: '::/0', gateway: 'fd00::1' },
      { destination: '192.168.0.0/16', gateway: '10.1.0.254' },
    ]);
    assert.equal(nic.mtu, 1450);
  });
});
