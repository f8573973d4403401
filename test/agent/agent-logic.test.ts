import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentEvent } from '../../src/agent-protocol/types.js';
import { agentCodecs, eventCodec } from '../../src/agent-protocol/api.js';
import { prepareAllTypes } from '../../src/agent-protocol/schema.js';
import { isPodvisorError } from '../../src/errors.js';
import { findPort } from '../../agent/channel.js';
import { EventHub } from '../../agent/events.js';
import { GuestProcess } from '../../agent/process.js';
import { forwardable, parseKmsg } from '../../agent/guest-log.js';
import { cgroupStats } from '../../agent/stats.js';
import { checkGuestPath, checkId } from '../../agent/validate.js';

// Unit tests of the agent's pure logic (no VM); the behaviour in a real guest
// is covered by containers.test.ts and channel.test.ts.

const output = (text: string) => ({ output: { containerId: 'c', execId: '', stream: 'STDOUT' as const, data: Buffer.from(text) } });

test('event hub delivers in order, queues while nobody listens, and flushes to the next subscriber', () => {
  const hub = new EventHub();
  const first: AgentEvent[] = [];
  const unsubscribe = hub.subscribe((e) => { first.push(e); return 'ok'; });
  hub.publish(output('a'));
  unsubscribe();
  hub.publish(output('b'));
  hub.publish({ exit: { containerId: 'c', execId: '', exitCode: 3, oomKilled: false, exitedAtUnixNanos: 1 } });
  const second: AgentEvent[] = [];
  hub.subscribe((e) => { second.push(e); return 'ok'; });
  assert.deepEqual(first.map((e) => e.sequence), [1]);
  assert.deepEqual(second.map((e) => e.sequence), [2, 3]);
  assert.equal(Buffer.from(second[0].output!.data).toString(), 'b');
  assert.equal(second[1].exit?.exitCode, 3);
});

test('event hub bound: output is dropped before exits, leaving a sequence gap', () => {
  const hub = new EventHub(1000);
  for (let i = 0; i < 20; i++) hub.publish(output('x'.repeat(200)));
  hub.publish({ exit: { containerId: 'c', execId: '', exitCode: 0, oomKilled: false, exitedAtUnixNanos: 1 } });
  const got: AgentEvent[] = [];
  hub.subscribe((e) => { got.push(e); return 'ok'; });
  assert.ok(got.length < 21);
  assert.equal(got.at(-1)?.exit?.exitCode, 0);
  assert.equal(got.at(-1)?.sequence, 21);
});

test('backpressure: a full transport queues events until flush, and producers hear drain', () => {
  const hub = new EventHub(8 << 20, 1000);
  let room = 1;
  const got: number[] = [];
  hub.subscribe((e) => { got.push(e.sequence); return --room > 0 ? 'ok' : 'full'; });
  hub.publish(output('a')); // taken, transport now full
  hub.publish(output('b')); // waits
  assert.deepEqual(got, [1]);
  assert.equal(hub.congested, true);
  let drained = 0;
  hub.on('drain', () => drained++);
  room = 10;
  hub.flush();
  assert.deepEqual(got, [1, 2]);
  assert.equal(hub.congested, false);
  assert.equal(drained, 1);
});

test('a subscriber that reports closed does not take the event; the next subscriber gets it', () => {
  const hub = new EventHub();
  hub.subscribe(() => 'closed');
  hub.publish(output('kept'));
  const got: string[] = [];
  hub.subscribe((e) => { got.push(Buffer.from(e.output!.data).toString()); return 'ok'; });
  assert.deepEqual(got, ['kept']);
});

test('events handed to a connection that went away are re-sent after the host\'s last sequence', () => {
  const hub = new EventHub();
  const firstHost: number[] = [];
  hub.subscribe((e) => { firstHost.push(e.sequence); return 'ok'; }, 0);
  for (const t of ['a', 'b', 'c']) hub.publish(output(t));
  // The host only got event 1 before the connection dropped.
  const secondHost: number[] = [];
  hub.subscribe((e) => { secondHost.push(e.sequence); return 'ok'; }, 1);
  hub.publish(output('d'));
  assert.deepEqual(firstHost, [1, 2, 3]);
  assert.deepEqual(secondHost, [2, 3, 4]);
});

test('with no subscriber the queue turns congested past the pause mark', () => {
  const hub = new EventHub(8 << 20, 1000);
  hub.publish(output('x'.repeat(600)));
  assert.equal(hub.congested, false);
  hub.publish(output('x'.repeat(600)));
  assert.equal(hub.congested, true);
  let drained = false;
  hub.once('drain', () => { drained = true; });
  const got: number[] = [];
  hub.subscribe((e) => { got.push(e.sequence); return 'ok'; });
  assert.deepEqual(got, [1, 2]);
  assert.equal(drained, true);
});

test('events survive the protobuf round trip with their oneof case', () => {
  const codec = eventCodec();
  const decoded = codec.decode(codec.encode({ sequence: 9, ...output('hi') } as AgentEvent));
  assert.equal(decoded.event, 'output');
  assert.equal(decoded.sequence, 9);
  assert.equal(decoded.output?.stream, 'STDOUT');
  assert.equal(Buffer.from(decoded.output!.data).toString(), 'hi');
  const codecs = agentCodecs();
  const protoRpcs = [...readFileSync(new URL('../../proto/agent.proto', import.meta.url), 'utf8').matchAll(/rpc (\w+)\(\w+\) returns \((?!stream)/g)].map((m) => m[1]);
  assert.deepEqual(Object.keys(codecs).sort(), protoRpcs.sort(), 'every unary RPC in proto/agent.proto has codecs');
  const req = codecs.ExecProcess.request.decode(codecs.ExecProcess.request.encode({ containerId: 'c', execId: 'e', args: ['sh'], user: { uid: 5, gid: 6 }, ttySize: { rows: 1, cols: 2 } }));
  assert.deepEqual([req.user?.uid, req.user?.gid, req.ttySize?.cols, req.tty], [5, 6, 2, false]);
});

test('kmsg records parse into level, first line and wall-clock time', () => {
  const rec = parseKmsg('6,339,5140900,-;Linux version 6.1.0\n SUBSYSTEM=x\n', 1_000_000);
  assert.deepEqual(rec, { level: 'info', message: 'Linux version 6.1.0', timeUnixNanos: Math.round((1_000_000 + 5140.9) * 1e6) });
  assert.equal(parseKmsg('3,1,0,-;oops', 0)?.level, 'err');
  assert.equal(parseKmsg('garbage without separator', 0), undefined);
});

test('of the kernel log already in the ring buffer only notices and worse are forwarded; everything after', () => {
  const start = 5_000_000_000;
  assert.equal(forwardable({ level: 'info', timeUnixNanos: start - 1 }, start), false);
  assert.equal(forwardable({ level: 'debug', timeUnixNanos: start - 1 }, start), false);
  for (const level of ['notice', 'warning', 'err', 'crit', 'alert', 'emerg']) assert.equal(forwardable({ level, timeUnixNanos: start - 1 }, start), true, level);
  assert.equal(forwardable({ level: 'info', timeUnixNanos: start }, start), true);
  assert.equal(forwardable({ level: 'debug', timeUnixNanos: start + 1 }, start), true);
});

test('cgroup v2 files become stats; missing controllers read as zero', () => {
  const dir = mkdtempSync(join(tmpdir(), 'podvisor-cg-'));
  try {
    const leaf = join(dir, 'c');
    mkdirSync(leaf);
    writeFileSync(join(dir, 'cpu.stat'), 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nthrottled_usec 7\n');
    writeFileSync(join(dir, 'memory.current'), '4096000\n');
    writeFileSync(join(dir, 'memory.stat'), 'anon 1000\nfile 3000\ninactive_file 96000\n');
    writeFileSync(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n');
    writeFileSync(join(dir, 'pids.current'), '3\n');
    writeFileSync(join(dir, 'io.stat'), '8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=2 rios=3 wios=4\n');
    writeFileSync(join(leaf, 'memory.max'), '16777216\n');
    writeFileSync(join(leaf, 'pids.max'), 'max\n');
    const s = cgroupStats(dir, leaf);
    assert.deepEqual(s.cpu, { usageUsec: 1500, userUsec: 1000, systemUsec: 500, throttledUsec: 7 });
    assert.deepEqual(s.memory, { currentBytes: 4096000, limitBytes: 16777216, anonBytes: 1000, fileBytes: 3000, workingSetBytes: 4000000, oomKills: 1 });
    assert.deepEqual(s.pids, { current: 3, limit: 0 });
    assert.deepEqual(s.io, { readBytes: 101, writeBytes: 202, readOps: 4, writeOps: 6 });
    const empty = cgroupStats(join(dir, 'missing'), join(dir, 'missing'));
    assert.equal(empty.memory.currentBytes, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ids and guest paths from the host are checked before use', () => {
  assert.equal(checkId('container id', 'abc-1.2_3'), 'abc-1.2_3');
  for (const bad of ['', '../x', 'a/b', '-x', 'x'.repeat(200), 'a b']) {
    assert.throws(() => checkId('container id', bad), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
  }
  assert.equal(checkGuestPath('p', '/run/x'), '/run/x');
  for (const bad of ['', 'relative', '/', '/a/../b', '/a//b', '/a/']) {
    assert.throws(() => checkGuestPath('p', bad), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
  }
});

test('the agent port is found by its virtio-serial name', () => {
  const sys = mkdtempSync(join(tmpdir(), 'podvisor-vports-'));
  try {
    for (const [port, name] of [['vport0p0', 'other'], ['vport0p1', 'podvisor.agent']]) {
      mkdirSync(join(sys, port));
      writeFileSync(join(sys, port, 'name'), `${name}\n`);
    }
    mkdirSync(join(sys, 'vport0p2')); // a port without a name
    assert.equal(findPort('podvisor.agent', sys), '/dev/vport0p1');
    assert.throws(() => findPort('missing', sys), (e) => isPodvisorError(e, 'NOT_FOUND'));
  } finally {
    rmSync(sys, { recursive: true, force: true });
  }
});

test('a process exit is reported while a background process it left holds the pipes, after all it wrote', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'podvisor-process-'));
  const hub = new EventHub();
  const events: AgentEvent[] = [];
  hub.subscribe((e) => { events.push(e); return 'ok'; });
  // 60000 bytes stay in the pipe when the shell exits (the guest's pipes hold 64 KiB); sleep keeps stdout open.
  const script = `echo $$ > ${join(dir, 'pid')}; echo before; head -c 60000 /dev/zero | tr '\\0' x; echo; sleep 100 & echo $! > ${join(dir, 'bg')}; exit 3`;
  const proc = new GuestProcess({
    containerId: 'c', execId: 'e', crunArgs: [], command: ['sh', '-c', script], cwd: dir, pidFile: join(dir, 'pid'),
    stdin: false, tty: false, hub, oomKills: () => 0,
  });
  try {
    const status = await proc.exited;
    assert.equal(status.exitCode, 3);
    const background = Number(readFileSync(join(dir, 'bg'), 'utf8'));
    assert.doesNotThrow(() => process.kill(background, 0), 'the background sleep still holds the pipe when the exit is reported');
    const stdout = events.filter((e) => e.output).map((e) => Buffer.from(e.output!.data).toString()).join('');
    assert.equal(stdout, `before\n${'x'.repeat(60000)}\n`);
    assert.ok(events.at(-1)?.exit, 'the exit event follows the output');
    process.kill(background, 'SIGKILL');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every agent message type can be prepared for the snapshot, and codecs still round-trip after', () => {
  prepareAllTypes();
  const { request } = agentCodecs().ConfigureNetwork;
  const req = { interfaces: [{ mac: '02:00:00:00:00:01', name: 'eth0', mtu: 1400, addresses: [{ cidr: '10.0.0.2/24' }] }], routes: [{ destination: 'default', gateway: '10.0.0.1' }] };
  const back = request.decode(request.encode(req as never));
  assert.equal(back.interfaces?.[0]?.addresses?.[0]?.cidr, '10.0.0.2/24');
  assert.equal(back.routes?.[0]?.gateway, '10.0.0.1');
});
