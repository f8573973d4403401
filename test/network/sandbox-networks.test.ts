import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HostTapMove, newHostTapName } from '../../src/network/host-tap.js';
import { isNetnsMounted } from '../../src/network/netns.js';
import type { PodNetworkRequest } from '../../src/network/pod-runtime-config.js';
import { SandboxNetworks } from '../../src/network/sandbox-networks.js';
import { TAP_NAME } from '../../src/network/tap-redirect.js';
import { createCniWorld, networksFor, type CniWorld } from './cni-fixture.js';

/**
 * The network half of a sandbox without a VM: real bridge, host-local,
 * portmap and loopback plugins in namespaces this test made; what ADD leaves
 * and what release takes away again, also after a failed ADD and from a
 * second instance (a restarted daemon).
 */

const inNs = (ns: string, ...args: string[]) => execFileSync('nsenter', [`--net=${ns}`, ...args], { encoding: 'utf8' });

function pod(id: string, extra: Partial<PodNetworkRequest> = {}): PodNetworkRequest {
  return { sandboxId: id, name: `pod-${id.slice(0, 6)}`, namespace: 'nettest', uid: `uid-${id}`, portMappings: [], annotations: {}, ...extra };
}

describe('sandbox networks with real CNI plugins', () => {
  let world: CniWorld;
  let net: SandboxNetworks;
  const id = (s: string) => `${s}${process.pid}`.padEnd(64, '0');

  before(() => {
    world = createCniWorld('unit');
    net = networksFor(world, join(world.dir, 'netns'), join(world.dir, 'cache'), '');
  });
  after(async () => {
    await world.cleanup([net]);
  });

  it('is not ready without a config, naming the folder, and picks one up when it appears', () => {
    const s = net.state();
    assert.equal(s.ready, false);
    assert.match(!s.ready ? s.message : '', new RegExp(world.confDir));
    world.writeConfig({ cniVersion: '1.0.0', name: 'broken', plugins: [{ type: 'no-such-plugin' }] });
    const broken = net.state();
    assert.ok(!broken.ready && broken.present && /no-such-plugin/.test(broken.message));
    world.writeConfig(world.conflist());
    const ok = net.state();
    assert.ok(ok.ready && ok.network.list.name === world.network);
  });

  it('ADD gives the pod v4 and v6 addresses, a tap redirected both ways, and hostPort rules; release takes all of it away', async () => {
    const sid = id('a');
    const s = await net.setup(pod(sid, { portMappings: [{ protocol: 'TCP', containerPort: 80, hostPort: 18000 + (process.pid % 1000), hostIp: '' }] }));
    assert.ok(s);
    assert.deepEqual(s.attachment.addresses.map((a) => a.family), [4, 6], 'IPv4 first, then IPv6');
    assert.ok(s.attachment.addresses[0]!.ip.startsWith(`${world.v4Prefix}.`));
    assert.ok(s.attachment.addresses[1]!.ip.startsWith(`${world.v6Prefix}:`));
    assert.ok(isNetnsMounted(s.netns));
    const eth0 = JSON.parse(inNs(s.netns, 'ip', '-j', 'link', 'show', 'eth0'))[0];
    assert.equal(s.attachment.mac, eth0.address, 'the guest NIC takes the CNI interface MAC');
    assert.notEqual(s.tap.mac, eth0.address, 'QEMU starts with a placeholder MAC of its own');
    for (const [from, to] of [['eth0', TAP_NAME], [TAP_NAME, 'eth0']]) {
      assert.match(inNs(s.netns, 'tc', 'filter', 'show', 'dev', from!, 'ingress'), new RegExp(`mirred \\(Egress Redirect to device ${to}\\)`));
    }
    assert.match(inNs(s.netns, 'ip', 'link', 'show', 'lo'), /UP/, 'loopback plugin ran');
    assert.equal(world.bridgePorts().length, 1);
    assert.equal(world.allocatedIps().length, 2);
    assert.ok(world.rulesMentioning(sid).length > 0, 'portmap rules carry the sandbox id');
    // Debian 12's portmap 1.1.1 looks for the IPv4 hostPort rule in the IPv6 table on a dual-stack
    // network, so CHECK of an intact attachment fails there (README says so); kept true here.
    await assert.rejects(net.check(sid), /plugin "portmap".*could not check ipv6 dnat: rule .*--to-destination \d+\.\d+\.\d+\.\d+:80/);

    await net.detach(sid);
    await net.detach(sid); // idempotent
    assert.deepEqual(world.allocatedIps(), []);
    assert.deepEqual(world.bridgePorts(), []);
    assert.deepEqual(world.rulesMentioning(sid), []);
    assert.ok(isNetnsMounted(s.netns), 'DEL (StopPodSandbox) keeps the namespace');
    await net.release(sid);
    assert.equal(existsSync(s.netns), false);
  });

  it('CHECK passes on an intact attachment (single-stack, or dual-stack without hostPorts) and fails once its veth is gone', async () => {
    const dual = id('d');
    await net.setup(pod(dual));
    assert.equal(await net.check(dual), 'checked', 'portmap 1.1.1 checks nothing without port mappings, so dual-stack passes here');
    await net.release(dual);
    world.writeConfig(world.conflist({ dualStack: false }));
    const sid = id('c');
    const s = await net.setup(pod(sid));
    assert.equal(await net.check(sid), 'checked');
    inNs(s!.netns, 'ip', 'link', 'del', 'eth0');
    await assert.rejects(net.check(sid), /CHECK/);
    await net.release(sid);
    assert.deepEqual(world.allocatedIps(), []);
    world.writeConfig(world.conflist());
  });

  it('a plugin failing half way through ADD leaves nothing after release', async () => {
    world.writeConfig(world.conflist({ extra: [{ type: 'tuning', sysctl: { 'net.ipv4.conf.eth0.no_such_knob': '1' } }] }));
    const sid = id('f');
    await assert.rejects(net.setup(pod(sid, { portMappings: [{ protocol: 'TCP', containerPort: 80, hostPort: 19000 + (process.pid % 1000), hostIp: '' }] })), /tuning/);
    assert.equal(world.allocatedIps().length, 2, 'bridge and host-local ran before tuning failed');
    await net.release(sid);
    assert.deepEqual(world.allocatedIps(), []);
    assert.deepEqual(world.bridgePorts(), []);
    assert.deepEqual(world.rulesMentioning(sid), []);
    assert.equal(existsSync(net.netnsPath(sid)), false);
    world.writeConfig(world.conflist());
  });

  it('a second instance (restarted daemon) deletes with the config kept at ADD time, even after the config changed', async () => {
    const sid = id('r');
    await net.setup(pod(sid));
    rmSync(join(world.confDir, '10-podvisor-test.conflist'));
    const restarted = networksFor(world, join(world.dir, 'netns'), join(world.dir, 'cache'));
    await restarted.release(sid);
    assert.deepEqual(world.allocatedIps(), []);
    assert.deepEqual(world.bridgePorts(), []);
    world.writeConfig(world.conflist());
  });

  it('a tap the VM backend brings in (libvirt): ADD waits for it before the redirects, and fails with the VM\'s reason when it never comes', async () => {
    const sid = id('h');
    const prepared = await net.prepare(sid, { vmMovesTapIn: true });
    assert.ok(prepared?.tap.handoff);
    assert.doesNotMatch(inNs(prepared.netns, 'ip', '-br', 'link'), new RegExp(TAP_NAME), 'no tap in the pod netns before the VM brings one');
    const attaching = net.attach(prepared, pod(sid));
    // The backend's part (HostTapMove): a host-netns tap, moved in under the pod tap's name.
    const move = new HostTapMove(newHostTapName(), prepared.netns, prepared.tap.name, prepared.tap.handoff);
    await move.create(join(world.dir, 'vm-h'));
    await move.moveIn();
    const s = await attaching;
    for (const [from, to] of [['eth0', TAP_NAME], [TAP_NAME, 'eth0']]) {
      assert.match(inNs(s.netns, 'tc', 'filter', 'show', 'dev', from!, 'ingress'), new RegExp(`mirred \\(Egress Redirect to device ${to}\\)`));
    }
    await net.release(sid);
    assert.deepEqual(world.allocatedIps(), []);

    const failed = id('i');
    const p2 = (await net.prepare(failed, { vmMovesTapIn: true }))!;
    const attaching2 = net.attach(p2, pod(failed));
    p2.tap.handoff!.failed(new Error('libvirt: cannot create the domain: test'));
    await assert.rejects(attaching2, /cannot create the domain: test/);
    await net.release(failed);
    assert.deepEqual(world.allocatedIps(), []);
    assert.deepEqual(world.bridgePorts(), []);
    assert.equal(existsSync(net.netnsPath(failed)), false);
  });

  it('without any config file a sandbox gets no network (loopback only) rather than an error', async () => {
    const empty = new SandboxNetworks({ confDir: join(world.dir, 'none'), binDirs: ['/usr/lib/cni'], netnsDir: join(world.dir, 'netns'), cacheDir: join(world.dir, 'cache'), podCidr: () => '' });
    assert.equal(await empty.setup(pod(id('n'))), undefined);
  });
});
