import { randomBytes } from 'node:crypto';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { AGENT_SERVICE, type GuestLog } from '../../src/agent-client/index.js';
import { isPodvisorError } from '../../src/errors.js';
import { FrameType, MAX_MESSAGE_LENGTH, encodeFrame } from '../../src/ttrpc/index.js';
import { encodeRequest } from '../../src/ttrpc/messages.js';
import { bootGuest, busyboxRootfsDisk, busyboxSpec, collectProcess, hostTap, type BootedGuest } from '../helpers/guest.js';

// The channel itself and the guest-wide RPCs, against one real guest.
let guest: BootedGuest;
let disk: { path: string; remove(): void };
let tap: ReturnType<typeof hostTap> | undefined;
const GUEST_MAC = '02:70:76:00:00:07';
const logs: GuestLog[] = [];
const IMAGE_MOUNT = '/run/podvisor/images/busybox';

/** Runs a command in a throw-away container that sees the guest's files and network. */
async function inGuest(id: string, script: string): Promise<string> {
  const root = `/run/podvisor/rootfs/${id}`;
  await guest.agent.mountOverlay({ lowerDirs: [IMAGE_MOUNT], target: root });
  const spec = JSON.parse(Buffer.from(busyboxSpec(root, ['sh', '-c', script])).toString());
  spec.linux.namespaces = spec.linux.namespaces.filter((n: { type: string }) => n.type !== 'uts');
  delete spec.hostname;
  for (const f of ['/etc/hosts', '/etc/resolv.conf', '/etc/hostname']) spec.mounts.push({ destination: f, source: f, type: 'bind', options: ['rbind', 'ro'] });
  await guest.agent.createContainer({ containerId: id, ociSpecJson: Buffer.from(JSON.stringify(spec)) });
  const io = collectProcess(guest.agent, id);
  await guest.agent.startContainer(id);
  const status = await guest.agent.waitProcess({ containerId: id });
  await io.exit;
  io.dispose();
  await guest.agent.deleteContainer({ containerId: id });
  await guest.agent.unmount({ path: root, removeDir: true });
  assert.equal(status.exitCode, 0, `${script} failed: ${io.stderr}`);
  return io.stdout;
}

before(async () => {
  disk = busyboxRootfsDisk();
  tap = hostTap('10.213.77.1/24');
  guest = await bootGuest({}, { tap: { name: tap.name, mac: GUEST_MAC } });
  guest.agent.on('log', (l) => logs.push(l));
  const plugged = await guest.vm.hotplugDisk({ id: 'busybox', path: disk.path, readOnly: true });
  await guest.agent.mountDisk({ scsiId: plugged.scsiId, lun: plugged.lun, mountPoint: IMAGE_MOUNT });
});

after(async () => {
  await guest?.stop();
  disk?.remove();
  tap?.remove();
});

test('health and version describe the running guest', async () => {
  const health = await guest.agent.health();
  assert.equal(health.status, 'SERVING');
  assert.equal(health.starts, 1);
  assert.ok(health.uptimeSeconds > 0);
  const version = await guest.agent.version();
  assert.equal(version.apiVersion, 'podvisor.agent.v1');
  assert.equal(version.kernelRelease, guest.image.manifest.kernelVersion);
  assert.equal(version.nodeVersion, guest.image.manifest.nodeVersion);
  assert.match(version.crunVersion, /^\d+\.\d+/);
});

test('sandbox setup: hostname, resolv.conf, hosts, sysctls, clock, entropy', async () => {
  const clock = Date.UTC(2031, 0, 2, 3, 4, 5) * 1e6;
  await guest.agent.setupSandbox({
    hostname: 'pod-one',
    dns: { servers: ['10.96.0.10'], searches: ['default.svc.cluster.local', 'svc.cluster.local'], options: ['ndots:5'] },
    hosts: [{ ip: '10.88.0.7', names: ['pod-one', 'pod-one.example'] }],
    sysctls: { 'net.ipv4.ip_forward': '1' },
    clockUnixNanos: clock,
    entropy: Buffer.alloc(64, 7),
  });
  const out = await inGuest('sandbox', 'hostname; cat /etc/resolv.conf; grep 10.88 /etc/hosts; cat /proc/sys/net/ipv4/ip_forward; date -u +%Y');
  assert.equal(out, 'pod-one\nnameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n10.88.0.7\tpod-one pod-one.example\n1\n2031\n');
  await guest.agent.setupSandbox({ clockUnixNanos: Date.now() * 1e6, entropy: randomBytes(32) });
  await assert.rejects(guest.agent.setupSandbox({ clockUnixNanos: Date.now() * 1e6 }), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(guest.agent.setupSandbox({ hostname: 'bad name!' }), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(guest.agent.setupSandbox({ sysctls: { '../../etc/passwd': 'x' } }), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
});

test('network setup: NIC found by MAC, renamed, MTU, address, routes, neighbour; the host answers a ping', async () => {
  await guest.agent.configureNetwork({
    interfaces: [{ mac: GUEST_MAC, name: 'eth0', mtu: 1400, addresses: [{ cidr: '10.213.77.2/24' }] }],
    routes: [{ destination: 'default', gateway: '10.213.77.1', device: 'eth0' }, { destination: '10.123.0.0/16', device: 'lo', metric: 7 }],
    neighbors: [{ ip: '10.213.77.1', mac: tap!.mac, device: 'eth0' }],
  });
  const out = await inGuest('net', 'ip -o link show eth0; ip -o addr show eth0; ip route; ip neigh show 10.213.77.1; ping -c 1 -W 10 10.213.77.1 >/dev/null && echo ping-ok');
  assert.match(out, new RegExp(`eth0: .*mtu 1400 .*link/ether ${GUEST_MAC}`));
  assert.match(out, /inet 10\.213\.77\.2\/24/);
  assert.match(out, /default via 10\.213\.77\.1 dev eth0/);
  assert.match(out, /10\.123\.0\.0\/16 dev lo .*metric 7/);
  assert.match(out, new RegExp(`10\\.213\\.77\\.1 dev eth0 lladdr ${tap!.mac} .*PERMANENT`));
  assert.match(out, /ping-ok/);
  await assert.rejects(guest.agent.configureNetwork({ interfaces: [{ mac: '02:00:00:00:00:99', name: 'eth0' }] }), (e) => isPodvisorError(e, 'NOT_FOUND'));
  await assert.rejects(guest.agent.configureNetwork({ routes: [{ destination: 'not-a-cidr' }] }), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
  // A step the kernel refuses ends the set-up with the step's name and ip's own reason.
  await assert.rejects(guest.agent.configureNetwork({ routes: [{ destination: '10.124.0.0/16', gateway: '10.250.0.1' }] }),
    (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /adding route 10\.124\.0\.0\/16: .*unreachable/i.test((e as Error).message));
});

test('agent and kernel logs reach the host as events', async () => {
  const deadline = Date.now() + 30_000;
  while (!(logs.some((l) => l.source === 'KERNEL') && logs.some((l) => l.source === 'AGENT')) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const kernel = logs.filter((l) => l.source === 'KERNEL');
  assert.ok(kernel.some((l) => /Linux version/.test(l.message)), 'the kernel banner is forwarded');
  assert.ok(logs.some((l) => l.source === 'AGENT' && /"msg":"agent ready"/.test(l.message)));
  assert.ok(kernel.every((l) => l.timeUnixNanos > 0 && l.level.length > 0));
});

test('reconnect: the host leaves and comes back; output produced meanwhile is delivered, the agent is not restarted', async () => {
  const root = '/run/podvisor/rootfs/ticker';
  await guest.agent.mountOverlay({ lowerDirs: [IMAGE_MOUNT], target: root });
  await guest.agent.createContainer({ containerId: 'ticker', ociSpecJson: busyboxSpec(root, ['sh', '-c', 'i=0; while [ $i -lt 15 ]; do echo tick $i; i=$((i+1)); sleep 0.2; done']) });
  const io = collectProcess(guest.agent, 'ticker');
  let reconnects = 0;
  guest.agent.on('reconnect', () => reconnects++);
  await guest.agent.startContainer('ticker');
  await io.waitFor('tick 2');
  const channel = await guest.agent.channel();
  channel.close();
  assert.equal(guest.agent.connected, false);
  await new Promise((r) => setTimeout(r, 1000)); // ticks happen while nobody listens
  assert.equal((await guest.agent.health()).starts, 1);
  assert.equal(reconnects, 1);
  const exit = await io.exit;
  assert.equal(exit.exitCode, 0);
  assert.equal(io.stdout, Array.from({ length: 15 }, (_, i) => `tick ${i}\n`).join(''));
  assert.equal(guest.agent.droppedEvents, 0);
  await guest.agent.deleteContainer({ containerId: 'ticker' });
  await guest.agent.unmount({ path: root, removeDir: true });
});

test('backpressure: 10 MiB of output while the host is away (more than the 8 MiB queue) arrives complete', async () => {
  const root = '/run/podvisor/rootfs/flood';
  await guest.agent.mountOverlay({ lowerDirs: [IMAGE_MOUNT], target: root });
  await guest.agent.createContainer({ containerId: 'flood', ociSpecJson: busyboxSpec(root, ['sh', '-c', 'echo start; sleep 1; dd if=/dev/zero bs=65536 count=160 2>/tmp/dd.err || cat /tmp/dd.err >&2; echo; echo end']) });
  const io = collectProcess(guest.agent, 'flood');
  const dropped = guest.agent.droppedEvents;
  await guest.agent.startContainer('flood');
  await io.waitFor('start');
  (await guest.agent.channel()).close();
  await new Promise((r) => setTimeout(r, 3000)); // the container fills the queue and blocks
  await guest.agent.health(); // reconnects
  let timer: NodeJS.Timeout | undefined;
  const exit = await Promise.race([io.exit, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no exit after 120 s; ${io.stdout.length} bytes of output arrived`)), 120_000); })]);
  clearTimeout(timer);
  assert.equal(exit.exitCode, 0, `stderr: ${io.stderr}; ${io.stdout.length} bytes of stdout`);
  assert.equal(io.stdout.length, 'start\n'.length + 160 * 65536 + '\nend\n'.length);
  assert.ok(io.stdout.endsWith('\nend\n'));
  // Log lines written to the old connection as it went may be lost (a sequence gap);
  // output is never dropped: it is held back instead.
  assert.ok(guest.agent.droppedEvents - dropped <= 5, `${guest.agent.droppedEvents - dropped} events lost`);
  io.dispose();
  await guest.agent.deleteContainer({ containerId: 'flood' });
  await guest.agent.unmount({ path: root, removeDir: true });
});

test('bad frames: oversized gets RESOURCE_EXHAUSTED, garbage and unknown methods get errors, the agent keeps serving', async () => {
  const channel = await guest.agent.channel();
  const big = channel.reserveStreamId();
  const bigReply = channel.awaitReply(big, 'oversized');
  // encodeFrame writes any length: the limit is the receiver's to enforce.
  channel.writeRaw(encodeFrame(big, FrameType.Request, 0, Buffer.alloc(MAX_MESSAGE_LENGTH + 1, 0x41)));
  await assert.rejects(bigReply, (e) => isPodvisorError(e, 'RESOURCE_EXHAUSTED'));

  const garbage = channel.reserveStreamId();
  const garbageReply = channel.awaitReply(garbage, 'garbage');
  channel.writeRaw(encodeFrame(garbage, FrameType.Request, 0, Buffer.from('\xff\xff\xff garbage', 'latin1')));
  await assert.rejects(garbageReply, (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));

  await assert.rejects(channel.call(AGENT_SERVICE, 'NoSuchMethod', new Uint8Array()), (e) => isPodvisorError(e, 'UNIMPLEMENTED'));
  await assert.rejects(channel.call('other.Service', 'Health', new Uint8Array()), (e) => isPodvisorError(e, 'UNIMPLEMENTED'));
  // A known method with a payload that is not its request message.
  await assert.rejects(channel.call(AGENT_SERVICE, 'StartContainer', encodeRequest({ service: 'x', method: 'y' }).map(() => 0xff)), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));

  assert.equal((await guest.agent.health()).status, 'SERVING');
  assert.equal((await guest.agent.health()).starts, 1);
});

test('shutdown powers the guest off cleanly', async () => {
  const exited = guest.vm.waitExit();
  await guest.agent.shutdown();
  // The VM manager's exit watch does not hold the event loop open; this timer does.
  let timer: NodeJS.Timeout | undefined;
  const info = await Promise.race([exited, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`the VM did not exit within 30 s of Shutdown; console:\n${guest.consoleLog().slice(-2000)}`)), 30_000); })]);
  clearTimeout(timer);
  assert.equal(info.reason, 'guest-shutdown');
});
