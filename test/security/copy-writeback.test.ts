import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { codec } from '../../src/agent-protocol/schema.js';
import type { ReadVolumeRequest, ReadVolumeResponse, VolumeEntry, WatchVolumesResponse } from '../../src/agent-protocol/types.js';
import { encodeFrame, FrameType, MAX_MESSAGE_LENGTH } from '../../src/ttrpc/index.js';
import { WATCH_VOLUMES_MARGIN_MS } from '../../src/agent-client/client.js';
import { copyVolumeId, MIN_WATCH_SPACING_MS, WATCH_MS } from '../../src/volume/copy-share.js';
import { COPY_LIMITS } from '../../src/volume/host-tree.js';
import { MAX_MESSAGE_CHARS, MAX_REFUSALS, type WriteBackRefusal } from '../../src/volume/write-back-refusals.js';
import { unary } from '../helpers/daemon.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import { containerConfig, containerState, rejectsWith, sandboxConfig, waitFor } from '../helpers/cri.js';
import { AgentChannelProxy, type GuestAnswer } from './agent-channel-proxy.js';

/**
 * A hostile guest against copy-mode write-back, through a real podvisord and
 * real VMs (share_mode = "copy"). Root in the guest can send anything on the
 * agent channel: here the test stands between podvisord and the hostile pod's
 * agent socket (AgentChannelProxy) and answers the write-back long poll
 * (WatchVolumes) and ReadVolume as such a guest would; every other call reaches
 * the pod's real agent. The rest is done by a privileged container in the same
 * pod with the real agent: device nodes, fifos, hard links, long names, deep
 * trees and volumes over the bounds.
 *
 * Each test asserts: the host stays bounded (podvisord's memory, the bytes and
 * entries written, the pace of the long poll, all from the code's constants);
 * nothing is written outside the pod's own writable volume directory; the other
 * pod and its volumes are untouched; podvisord keeps answering CRI calls; and
 * the error has the right status and a message that says what to do.
 * One daemon and two VMs are shared by the tests of this file.
 */

const watchResponse = codec<WatchVolumesResponse>('WatchVolumesResponse');
const readResponse = codec<ReadVolumeResponse>('ReadVolumeResponse');
const readRequest = codec<ReadVolumeRequest>('ReadVolumeRequest');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MiB = 1 << 20;

/** A file tree as a comparable text: path, type, mode, size and content hash of every entry. */
function treeOf(dir: string): string {
  const out: string[] = [];
  const visit = (p: string, rel: string) => {
    const st = lstatSync(p);
    const hash = st.isFile() ? createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16) : '';
    out.push(`${rel} ${st.mode.toString(8)} ${st.isFile() ? st.size : ''} ${hash}`);
    if (st.isDirectory()) for (const n of readdirSync(p).sort()) visit(join(p, n), `${rel}/${n}`);
  };
  if (existsSync(dir)) visit(dir, '');
  return out.join('\n');
}

/** Files and bytes below a directory (podvisord may be writing it meanwhile: what vanishes under the walk is not counted). */
function usage(dir: string): { entries: number; bytes: number } {
  let entries = 0;
  let bytes = 0;
  const visit = (p: string) => {
    let names: string[] = [];
    try {
      names = readdirSync(p);
    } catch {
      return; // removed under the walk
    }
    for (const n of names) {
      const st = lstatSafe(join(p, n));
      if (!st) continue;
      entries++;
      if (st.isFile()) bytes += st.size;
      if (st.isDirectory()) visit(join(p, n));
    }
  };
  visit(dir);
  return { entries, bytes };
}

describe('a hostile guest against copy-mode volume write-back', () => {
  let env: PodTestEnv;
  let proxy: AgentChannelProxy;
  const rt = () => env.daemon.client.runtime;
  const ids = { victim: '', hostile: '' };
  let victimApp = '';
  let hostileApp = '';
  /** Host folders: vols/<pod>/{empty,ro}; `empty` is each pod's emptyDir, `ro` a read-only hostPath. */
  let vols = '';
  const dirOf = (pod: 'victim' | 'hostile', vol: 'empty' | 'ro') => join(vols, pod, vol);
  let hostileVolume = '';
  const escapeName = `pv-escape-${randomBytes(4).toString('hex')}`;
  /** What must never change: the victim's volumes, the hostile pod's read-only one, everything around the volumes. */
  let guarded = '';
  let peakRssKiB = 0;
  let baselineKiB = 0;
  let sampler: NodeJS.Timeout | undefined;

  const guardedTree = () => [
    treeOf(dirOf('victim', 'empty')), treeOf(dirOf('victim', 'ro')), treeOf(dirOf('hostile', 'ro')),
    // Around the hostile pod's emptyDir: nothing may appear beside it or above it.
    readdirSync(vols).join(','), readdirSync(join(vols, 'hostile')).join(','), readdirSync(env.dir).join(','),
  ].join('\n--\n');

  const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${env.daemon.proc.pid}/status`, 'utf8'))?.[1] ?? 0);

  async function exec(id: string, script: string) {
    const r = await unary(rt(), 'ExecSync', { container_id: id, cmd: ['sh', '-c', script], timeout: 120 });
    return { code: r.exit_code, out: Buffer.from(r.stdout).toString().trim(), err: Buffer.from(r.stderr).toString().trim() };
  }

  /** podvisord serves, and the other pod runs on with its volumes as they were. */
  async function othersUntouched(): Promise<void> {
    assert.equal(env.daemon.proc.exitCode, null, 'podvisord is alive');
    assert.ok((await unary(rt(), 'Version', { version: 'v1' })).runtime_name);
    const { items } = await unary(rt(), 'ListPodSandbox', {});
    assert.equal(items.find((s) => s.id === ids.victim)?.state, 'SANDBOX_READY');
    assert.equal((await containerState(env.daemon.client, victimApp)).state, 'CONTAINER_RUNNING');
    assert.equal(guardedTree(), guarded, 'nothing outside the hostile pod\'s writable volume changed');
    assert.ok(!existsSync(join('/tmp', escapeName)) && !existsSync(join('/', escapeName)), 'nothing was written at an absolute path');
  }

  /** The hostile pod's writable volume within the copy bounds. */
  function hostileBounded(): { entries: number; bytes: number } {
    const u = usage(dirOf('hostile', 'empty'));
    const names = () => readdirSync(dirOf('hostile', 'empty')).slice(0, 40).join(' ');
    assert.ok(u.entries <= COPY_LIMITS.entries, `${u.entries} entries written back: ${names()}`);
    assert.ok(u.bytes <= COPY_LIMITS.volumeBytes, `${u.bytes} bytes written back: ${names()}`);
    return u;
  }

  /** Where podvisord's output stood when the running test began: each test reads only what it caused. */
  let logMark = 0;
  const logged = (pattern: RegExp) => pattern.test(env.daemon.output().slice(logMark));
  const waitLogged = (what: string, pattern: RegExp, timeoutMs = 60_000) =>
    waitFor(what, async () => (logged(pattern) ? true : undefined), timeoutMs);

  /** The guest's long poll answer: `entries` as the hostile volume's manifest (forged, answered at once). */
  function forgeWatch(answer: () => GuestAnswer | WatchVolumesResponse | undefined): void {
    proxy.before = (call) => {
      if (call.method !== 'WatchVolumes') return undefined;
      const a = answer();
      if (!a) return undefined;
      return 'changed' in a ? { payload: watchResponse.encode(a) } : a;
    };
  }
  const manifest = (entries: VolumeEntry[]): WatchVolumesResponse => ({
    changed: [hostileVolume], readIds: [hostileVolume], reads: [{ exists: true, entries: [{ path: '', kind: 'dir', mode: 0o777, stamp: 'root' }, ...entries] }],
  });
  let stampSeq = 0;
  const file = (path: string, data: string | Buffer, mode = 0o644): VolumeEntry =>
    ({ path, kind: 'file', mode, data: Buffer.from(data), stamp: `1:1:${Buffer.from(data).length}:${++stampSeq}` });
  const dir = (path: string): VolumeEntry => ({ path, kind: 'dir', mode: 0o755, stamp: `d:${path}` });

  /** Lets the real agent bring the host in step (two whole long polls), so a test starts from a still host tree. */
  async function settle(): Promise<void> {
    proxy.before = undefined;
    proxy.after = undefined;
    const start = proxy.calls.get('WatchVolumes') ?? 0;
    await waitFor('two real long polls', async () => ((proxy.calls.get('WatchVolumes') ?? 0) >= start + 2 ? true : undefined), 60_000);
  }

  /** Waits until podvisord has taken `n` more forged long-poll answers. */
  async function forgedAnswers(n: number): Promise<void> {
    const start = proxy.forged.get('WatchVolumes') ?? 0;
    await waitFor(`${n} forged long-poll answers`, async () => ((proxy.forged.get('WatchVolumes') ?? 0) >= start + n ? true : undefined), 60_000);
  }

  before(async () => {
    env = await startPodTestEnv({}, '\n[volumes]\nshare_mode = "copy"\n');
    try {
      await env.pull(env.busybox);
      vols = join(env.dir, 'vols');
      for (const pod of ['victim', 'hostile'] as const) {
        mkdirSync(dirOf(pod, 'empty'), { recursive: true });
        mkdirSync(dirOf(pod, 'ro'), { recursive: true });
        mkdirSync(join(vols, pod, 'fresh'));
        writeFileSync(join(dirOf(pod, 'empty'), 'seed'), `${pod} seed\n`);
        writeFileSync(join(dirOf(pod, 'ro'), 'keep'), `${pod} read-only\n`);
        const cfg = sandboxConfig(pod, join(env.dir, 'logs', pod));
        ids[pod] = (await unary(rt(), 'RunPodSandbox', { config: cfg })).pod_sandbox_id;
        const c = (await unary(rt(), 'CreateContainer', {
          pod_sandbox_id: ids[pod], sandbox_config: cfg,
          config: containerConfig('app', env.busybox, ['sleep', '100000'], {
            mounts: [{ container_path: '/data', host_path: dirOf(pod, 'empty') }, { container_path: '/ro', host_path: dirOf(pod, 'ro'), readonly: true }],
            ...(pod === 'hostile' ? { linux: { security_context: { privileged: true } } } : {}),
          }),
        })).container_id;
        await unary(rt(), 'StartContainer', { container_id: c });
        if (pod === 'victim') victimApp = c;
        else hostileApp = c;
      }
      hostileVolume = copyVolumeId(dirOf('hostile', 'empty'));

      // Root in the hostile guest takes the agent channel: podvisord restarts onto it (it finds its pods again).
      await env.killDaemon();
      const socket = join(env.dir, 'state', 'vms', ids.hostile, 'agent.sock');
      renameSync(socket, `${socket}.real`);
      proxy = await new AgentChannelProxy(socket, `${socket}.real`).listen();
      await env.startDaemon();
      const { items } = await unary(rt(), 'ListPodSandbox', {});
      assert.deepEqual(items.map((s) => s.state), ['SANDBOX_READY', 'SANDBOX_READY']);
      // The write-back works through the proxy: a write in the hostile guest reaches the host.
      assert.equal((await exec(hostileApp, 'echo through > /data/through')).code, 0);
      await waitFor('the write-back through the proxy', async () => (existsSync(join(dirOf('hostile', 'empty'), 'through')) ? true : undefined));
      guarded = guardedTree();
      baselineKiB = rssKiB();
      sampler = setInterval(() => { peakRssKiB = Math.max(peakRssKiB, rssKiB()); }, 100);
      console.log(`podvisord RSS after setup: ${rssKiB() >> 10} MiB`);
    } catch (e) {
      console.log(`setup failed; podvisord said:\n${env.daemon.output().split('\n').slice(-40).join('\n')}`);
      throw e;
    }
  });

  beforeEach(() => {
    logMark = env.daemon.output().length;
  });

  // A test that fails half-way must not leave the guest lying to the next one.
  afterEach(() => {
    if (!proxy) return;
    proxy.before = undefined;
    proxy.after = undefined;
  });

  after(async () => {
    clearInterval(sampler);
    if (proxy) {
      proxy.before = undefined;
      proxy.after = undefined;
    }
    await env?.dispose();
    await proxy?.close();
  });

  test('a forged long-poll answer within the rules is written back, setuid bits dropped (the proxy reaches write-back)', async () => {
    forgeWatch(() => manifest([dir('ctl'), file('ctl/ok', 'forged and fine', 0o4755)]));
    const ok = join(dirOf('hostile', 'empty'), 'ctl', 'ok');
    await waitFor('the forged file on the host', async () => (existsSync(ok) ? true : undefined));
    proxy.before = undefined;
    assert.equal(readFileSync(ok, 'utf8'), 'forged and fine');
    assert.equal(lstatSync(ok).mode & 0o7777, 0o755, 'no setuid bit on the host');
    // The forged manifest lacked the real files: the host took them as removed (the guest said so).
    assert.ok(!existsSync(join(dirOf('hostile', 'empty'), 'seed')));
    hostileBounded();
    await othersUntouched();
  });

  test('entries naming paths outside the volume, NULs, odd kinds, absurd names or parents are refused whole', async () => {
    await settle();
    const own = treeOf(dirOf('hostile', 'empty'));
    const deep = Array.from({ length: 600 }, (_, i) => `d${i}`).join('/');
    const cases: Array<{ name: string; entries: VolumeEntry[]; error: RegExp }> = [
      { name: '..', entries: [file(`../${escapeName}`, 'out')], error: /is not a plain relative path/ },
      { name: 'a/../..', entries: [dir('a'), file(`a/../../${escapeName}`, 'out')], error: /is not a plain relative path/ },
      { name: 'absolute', entries: [file(`/tmp/${escapeName}`, 'out')], error: /is not a plain relative path/ },
      { name: 'NUL', entries: [file(`x\0/../../${escapeName}`, 'out')], error: /holds a NUL byte/ },
      { name: 'device kind', entries: [{ path: 'dev', kind: 'chardev' as VolumeEntry['kind'], mode: 0o666, stamp: '1:1:0:1' }], error: /has kind \\"chardev\\"/ },
      { name: 'fifo kind', entries: [{ path: 'fifo', kind: 'fifo' as VolumeEntry['kind'], mode: 0o666, stamp: '1:1:0:1' }], error: /has kind \\"fifo\\"/ },
      { name: 'long name', entries: [file('n'.repeat(300), 'x')], error: /has a name longer than 255 bytes/ },
      { name: 'long path', entries: [file(`${'p/'.repeat(2100)}f`, 'x')], error: /is longer than 4096 bytes/ },
      { name: 'deep tree without parents', entries: [file(`${deep}/f`, 'x')], error: /has no directory listed as its parent/ },
      { name: 'a path twice', entries: [file('twice', 'a'), file('twice', 'b')], error: /is listed twice/ },
      { name: 'a size that is not one', entries: [{ path: 'nosize', kind: 'file', mode: 0o644, stamp: 'x' }], error: /has no size in its stamp/ },
    ];
    for (const c of cases) {
      forgeWatch(() => manifest([file(`legit-${c.name.replace(/\W/g, '_')}`, 'with a bad neighbour'), ...c.entries]));
      await forgedAnswers(2);
      assert.ok(logged(c.error), `${c.name}: podvisord logs why (${c.error})`);
    }
    proxy.before = undefined;
    assert.match(env.daemon.output().slice(logMark), /broke the volume copy protocol .*nothing of it was used or written back/);
    assert.equal(treeOf(dirOf('hostile', 'empty')), own, 'no answer with a bad entry wrote anything, not even its good entries');
    hostileBounded();
    await othersUntouched();
  });

  test('answers naming the other pod\'s volume, a read-only volume or unknown ids write nothing', async () => {
    await settle();
    const own = treeOf(dirOf('hostile', 'empty'));
    const others = [copyVolumeId(dirOf('victim', 'empty')), copyVolumeId(dirOf('hostile', 'ro')), 'ffffffffffffffff', '../../../etc'];
    const entries: VolumeEntry[] = [{ path: '', kind: 'dir', mode: 0o777, stamp: 'root' }, file('planted', 'from a hostile guest')];
    forgeWatch(() => ({ changed: others, readIds: others, reads: others.map(() => ({ exists: true, entries })) }));
    await forgedAnswers(3);
    proxy.before = undefined;
    assert.equal(treeOf(dirOf('hostile', 'empty')), own);
    for (const d of [dirOf('victim', 'empty'), dirOf('hostile', 'ro')]) assert.ok(!existsSync(join(d, 'planted')));
    await othersUntouched();
  });

  test('a manifest over the entry bound, or files over the byte bounds, are refused with RESOURCE_EXHAUSTED', async () => {
    await settle();
    const many = Array.from({ length: COPY_LIMITS.entries + 10 }, (_, i) => file(`f${i}`, ''));
    forgeWatch(() => manifest(many));
    await forgedAnswers(2);
    assert.ok(logged(new RegExp(`has ${COPY_LIMITS.entries + 11} entries, more than the ${COPY_LIMITS.entries} a copied volume may have`)));
    // Files that claim sizes over the bounds, asked for by path; and ones that claim little and bring more.
    const fileLimit = COPY_LIMITS.fileBytes;
    forgeWatch(() => manifest([{ path: 'huge', kind: 'file', mode: 0o644, stamp: `1:1:${fileLimit + 1}:${++stampSeq}` }]));
    await forgedAnswers(2);
    assert.ok(logged(new RegExp(`is ${fileLimit + 1} bytes, more than the ${fileLimit} a copied volume file may have`)));
    const count = Math.ceil(COPY_LIMITS.volumeBytes / (2 * MiB)) + 4;
    const claimed = (path: string, size: number): VolumeEntry => ({ path, kind: 'file', mode: 0o644, stamp: `1:1:${size}:${++stampSeq}` });
    forgeWatch(() => manifest(Array.from({ length: count }, (_, i) => claimed(`big${i}`, 2 * MiB))));
    await forgedAnswers(2);
    assert.ok(logged(new RegExp(`more than the ${COPY_LIMITS.volumeBytes} a copied volume may hold; nothing more of it is written back until the pod deletes some of it`)));
    // Files that claim the bound's worth, and a last one that claims 1 byte and brings a full file when read by path:
    // the bytes that arrive are what count.
    const honest = Math.floor(COPY_LIMITS.volumeBytes / (2 * MiB)) - 1;
    // Each answer names new files: what a refused pull wrote must still be counted and removed, or it piles up.
    let round = 0;
    forgeWatch(() => {
      round++;
      return manifest([...Array.from({ length: honest }, (_, i) => claimed(`fill${round}-${i}`, 2 * MiB)), claimed('liar', 1)]);
    });
    const forgeWatchAnswer = proxy.before!;
    proxy.before = (call) => {
      if (call.method !== 'ReadVolume') return forgeWatchAnswer(call);
      const req = readRequest.decode(call.request);
      if (req.volumeId !== hostileVolume || !req.paths?.length) return undefined;
      return { payload: readResponse.encode({ exists: true, entries: req.paths.map((p) => ({ path: p, kind: 'file', mode: 0o644, data: Buffer.alloc(p === 'liar' ? fileLimit : 2 * MiB, 1), stamp: 'x' })) }) };
    };
    await waitLogged('the liar refused', new RegExp(`holds at least ${honest * 2 * MiB + fileLimit} bytes, more than the ${COPY_LIMITS.volumeBytes} a copied volume may hold`));
    await forgedAnswers(2);
    proxy.before = undefined;
    const u = hostileBounded();
    console.log(`after the byte floods the hostile volume holds ${u.entries} entries, ${(u.bytes / MiB).toFixed(1)} MiB on the host`);
    assert.ok(!existsSync(join(dirOf('hostile', 'empty'), 'liar')), 'the file that brought more than it claimed was not written');
    for (const n of ['huge', 'big0', 'f0']) assert.ok(!existsSync(join(dirOf('hostile', 'empty'), n)), `${n}: refused answers wrote nothing`);
    await othersUntouched();
  });

  test('garbage, oversized, endless and instant answers cost the host a bounded pace and memory', async () => {
    await settle();
    const before = proxy.calls.get('WatchVolumes') ?? 0;
    let t0 = performance.now();
    // 1. Instant answers with a new 1 MiB file each time: without pacing this is a busy loop of writes.
    forgeWatch(() => manifest([file('spin', randomBytes(MiB))]));
    await sleep(4000);
    let calls = (proxy.calls.get('WatchVolumes') ?? 0) - before;
    let seconds = (performance.now() - t0) / 1000;
    console.log(`instant answers: ${calls} long polls in ${seconds.toFixed(1)} s (at most one per ${MIN_WATCH_SPACING_MS} ms)`);
    assert.ok(calls <= Math.ceil((seconds * 1000) / MIN_WATCH_SPACING_MS) + 1, `${calls} long polls in ${seconds.toFixed(1)} s`);
    assert.ok(calls >= 2, 'the answers were being taken');
    // 2. Instant empty answers.
    const before2 = proxy.calls.get('WatchVolumes') ?? 0;
    t0 = performance.now();
    forgeWatch(() => ({ changed: [], reads: [], readIds: [] }));
    await sleep(3000);
    calls = (proxy.calls.get('WatchVolumes') ?? 0) - before2;
    seconds = (performance.now() - t0) / 1000;
    assert.ok(calls <= Math.ceil((seconds * 1000) / MIN_WATCH_SPACING_MS) + 1, `${calls} empty long polls in ${seconds.toFixed(1)} s`);
    // 3. The most a reply may decode to: a full-size message of empty entries, at once, again and again.
    const empties = Buffer.alloc(MAX_MESSAGE_LENGTH - 64);
    for (let i = 0; i + 4 <= empties.length; i += 4) empties.set([0x12, 0x02, 0x12, 0x00], i); // reads: [{ entries: [{}] }]
    forgeWatch(() => ({ payload: empties }));
    await forgedAnswers(3);
    assert.ok(logged(/WatchVolumes: reply holds more than \d+ fields, more than any answer of this call; not decoded/), 'refused before decoding');
    // 4. Undecodable protobuf; 5. a frame over the ttRPC limit; 6. an error status with a huge message.
    forgeWatch(() => ({ payload: Buffer.from([0xff, 0xff, 0xff, 0x0f]) }));
    await forgedAnswers(2);
    assert.ok(logged(/WatchVolumes: undecodable reply/));
    forgeWatch(() => ({ raw: (conn, streamId) => conn.write(encodeFrame(streamId, FrameType.Response, 0, Buffer.alloc(MAX_MESSAGE_LENGTH + 1))) }));
    await forgedAnswers(2);
    assert.ok(logged(/byte frame, over the ttRPC limit/));
    forgeWatch(() => ({ status: { code: 8, message: 'x'.repeat(MiB) } }));
    await forgedAnswers(2);
    console.log(`peak RSS after the decoding floods: ${peakRssKiB >> 10} MiB (${baselineKiB >> 10} MiB after setup)`);
    // 7. An endless frame: a header that promises 4 GiB, then bytes as fast as the socket takes them.
    let streaming = true;
    let sent = 0;
    forgeWatch(() => ({
      raw: (conn, streamId) => {
        proxy.before = undefined;
        const head = Buffer.alloc(10);
        head.writeUInt32BE(0xffffffff, 0);
        head.writeUInt32BE(streamId, 4);
        head.writeUInt8(FrameType.Response, 8);
        conn.write(head);
        const chunk = Buffer.alloc(MiB, 0x5a);
        const pump = () => {
          while (streaming && !conn.destroyed) {
            sent += chunk.length;
            if (!conn.write(chunk)) return void conn.once('drain', pump);
          }
        };
        pump();
      },
    }));
    await forgedAnswers(1);
    const endlessFrom = performance.now();
    while (performance.now() - endlessFrom < 5000) {
      // podvisord answers other calls meanwhile, and the victim's are not slowed into failure.
      await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: ids.victim });
      await sleep(200);
    }
    streaming = false;
    console.log(`endless frame: ${(sent / MiB).toFixed(0)} MiB streamed at podvisord in 5 s; peak RSS so far ${peakRssKiB >> 10} MiB`);
    // That channel is spent (the rest of the frame would follow): the guest side drops it, and podvisord reconnects.
    proxy.dropConnections();
    await waitFor('the hostile pod to answer again', async () => ((await exec(hostileApp, 'echo back > /data/back').catch(() => ({ code: 1 }))).code === 0 ? true : undefined), 120_000);
    await waitFor('write-back to resume', async () => (existsSync(join(dirOf('hostile', 'empty'), 'back')) ? true : undefined));
    hostileBounded();
    await othersUntouched();
    // A guest's answers cost podvisord a bounded few of its largest messages' worth, never their decoded blow-up.
    assert.ok(peakRssKiB - baselineKiB < (64 * MAX_MESSAGE_LENGTH) >> 10, `podvisord grew from ${baselineKiB >> 10} to ${peakRssKiB >> 10} MiB`);
  });

  test('the real agent, driven by root in the guest: device nodes, fifos, hard links, links out, long names, deep trees', async () => {
    const long = 'L'.repeat(255);
    const deep = Array.from({ length: 150 }, () => 'd').join('/');
    const r = await exec(hostileApp, [
      'cd /data && mknod dev c 1 3 && mkfifo fifo && echo hard > a && ln a hard && chmod 4755 a',
      `ln -s /etc/shadow link-out && ln -s ../../../../${escapeName} link-up && echo long > ${long}`,
      `mkdir -p ${deep} && echo bottom > ${deep}/f && echo done > zz-last`,
    ].join(' && '));
    assert.equal(r.code, 0, r.err);
    const root = dirOf('hostile', 'empty');
    await waitFor('the deep file on the host', async () => (existsSync(join(root, deep, 'f')) && existsSync(join(root, 'zz-last')) ? true : undefined));
    for (const n of ['dev', 'fifo', 'link-out', 'link-up']) assert.ok(!existsSync(join(root, n)) && !lstatSafe(join(root, n)), `${n} stays in the guest`);
    for (const n of ['a', 'hard']) {
      const st = lstatSync(join(root, n));
      assert.ok(st.isFile() && st.nlink === 1, `${n} is a plain file of its own on the host`);
      assert.equal(st.mode & 0o7000, 0, `${n} has no setuid bit`);
    }
    assert.equal(readFileSync(join(root, long), 'utf8'), 'long\n');
    assert.equal(readFileSync(join(root, deep, 'f'), 'utf8'), 'bottom\n');
    hostileBounded();
    await othersUntouched();
  });

  test('the real agent over the bounds: the host stops at the volume and file bounds, and resumes once the pod shrinks', async () => {
    const root = dirOf('hostile', 'empty');
    const count = Math.floor(COPY_LIMITS.volumeBytes / (2 * MiB)) + 4;
    // Written aside (the agent never lists its own .podvisor-tmp- names) and moved in at once: the host meets the whole
    // volume in one answer instead of carrying 64 MiB over the TCG channel first (the forged liar above covers that).
    const stage = '/data/.podvisor-tmp-stage';
    const r = await exec(hostileApp, `mkdir -p ${stage} && i=0; while [ $i -lt ${count} ]; do dd if=/dev/zero of=${stage}/$i bs=1048576 count=2 2>/dev/null || exit 1; i=$((i+1)); done; mv ${stage} /data/big`);
    assert.equal(r.code, 0, r.err);
    await waitLogged('the volume bound refusal', new RegExp(`holds at least \\d+ bytes, more than the ${COPY_LIMITS.volumeBytes} a copied volume may hold`));
    const u = hostileBounded();
    console.log(`a guest writing ${count * 2} MiB: ${(u.bytes / MiB).toFixed(1)} MiB reached the host (bound ${COPY_LIMITS.volumeBytes / MiB} MiB)`);
    assert.equal((await exec(hostileApp, 'rm -rf /data/big && echo shrunk > /data/shrunk')).code, 0);
    await waitFor('write-back to resume', async () => (existsSync(join(root, 'shrunk')) && !existsSync(join(root, 'big')) ? true : undefined));
    assert.equal((await exec(hostileApp, `dd if=/dev/zero of=/data/over bs=1048576 count=${(COPY_LIMITS.fileBytes / MiB) + 1} 2>/dev/null`)).code, 0);
    await waitLogged('the file bound refusal', new RegExp(`is ${COPY_LIMITS.fileBytes + MiB} bytes, more than the ${COPY_LIMITS.fileBytes} a copied volume file may have`));
    assert.ok(!existsSync(join(root, 'over')));
    assert.equal((await exec(hostileApp, 'rm -f /data/over')).code, 0);
    hostileBounded();
    await othersUntouched();
  });

  test('CreateContainer on a forged ReadVolume answer fails with the right status and leaves nothing', async () => {
    const cfg = sandboxConfig('hostile', join(env.dir, 'logs', 'hostile'));
    const fresh = join(vols, 'hostile', 'fresh');
    const create = () => unary(rt(), 'CreateContainer', {
      pod_sandbox_id: ids.hostile, sandbox_config: cfg,
      config: containerConfig('second', env.busybox, ['sleep', '100000'], { mounts: [{ container_path: '/fresh', host_path: fresh }] }),
    });
    const forgeRead = (answer: () => GuestAnswer) => {
      proxy.after = (call) => {
        if (call.method !== 'ReadVolume') return undefined;
        const req = readRequest.decode(call.request);
        return req.volumeId === copyVolumeId(fresh) ? answer() : undefined;
      };
    };
    const root: VolumeEntry = { path: '', kind: 'dir', mode: 0o755, stamp: '1:1:0:1' };
    forgeRead(() => ({ payload: readResponse.encode({ exists: true, entries: [root, ...Array.from({ length: COPY_LIMITS.entries + 1 }, (_, i) => file(`f${i}`, ''))] }) }));
    await rejectsWith(create(), 'RESOURCE_EXHAUSTED', new RegExp(`more than the ${COPY_LIMITS.entries} a copied volume may have`));
    forgeRead(() => ({ payload: readResponse.encode({ exists: true, entries: [root, file(`../${escapeName}`, 'out')] }) }));
    await rejectsWith(create(), 'INTERNAL', /broke the volume copy protocol .*is not a plain relative path.* the pod's guest may be compromised/);
    forgeRead(() => ({ payload: Buffer.from([0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]) }));
    await rejectsWith(create(), 'INTERNAL', /ReadVolume: undecodable reply/);
    proxy.after = undefined;
    // Nothing left: no container, no copy of the volume in the share's table, nothing written into it.
    const { containers } = await unary(rt(), 'ListContainers', { filter: { pod_sandbox_id: ids.hostile } });
    assert.deepEqual(containers.map((c) => c.metadata?.name), ['app']);
    const table = JSON.parse(readFileSync(join(env.dir, 'state', 'volumes', ids.hostile, 'copies.json'), 'utf8')) as { volumes: Array<{ hostPath: string }> };
    assert.ok(!table.volumes.some((v) => v.hostPath === fresh));
    assert.deepEqual(readdirSync(fresh), []);
    await othersUntouched();
  });

  /** What PodSandboxStatus / ContainerStatus verbose info say the write-back refused lately. */
  type Refusals = { total: number; recent: WriteBackRefusal[] };
  const sandboxRefusals = async (id: string): Promise<Refusals | undefined> =>
    JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: id, verbose: true })).info.info!).volumeWriteBackRefusals;
  const containerRefusals = async (id: string): Promise<Refusals | undefined> =>
    JSON.parse((await unary(rt(), 'ContainerStatus', { container_id: id, verbose: true })).info.info!).volumeWriteBackRefusals;

  test('refusals reach the operator in PodSandboxStatus and ContainerStatus verbose info, bounded in count and size', async () => {
    await settle();
    const before = (await sandboxRefusals(ids.hostile))?.total ?? 0;
    // More distinct refusals than are kept, one of them an error status carrying a megabyte of the guest's text.
    let round = 0;
    forgeWatch(() => {
      round++;
      if (round === MAX_REFUSALS + 2) return { status: { code: 8, message: 'G'.repeat(MiB) } };
      return manifest([file(`r${round}/../../${'e'.repeat(300)}`, 'out')]);
    });
    await waitFor(`${MAX_REFUSALS + 4} refused answers`, async () => (round >= MAX_REFUSALS + 4 ? true : undefined), 120_000);
    await forgedAnswers(1);
    proxy.before = undefined;
    const pod = await sandboxRefusals(ids.hostile);
    assert.ok(pod, 'a copy-mode sandbox says what its write-back refused');
    console.log(`PodSandboxStatus verbose info: ${pod.total - before} new refusals, ${pod.recent.length} kept; newest: ${JSON.stringify(pod.recent.at(-1)).slice(0, 300)}`);
    assert.ok(pod.total - before >= MAX_REFUSALS + 3, `${pod.total - before} refusals counted`);
    assert.equal(pod.recent.length, MAX_REFUSALS, 'only the last few are kept');
    for (const r of pod.recent) {
      assert.ok(r.message.length <= MAX_MESSAGE_CHARS + 10, `a ${r.message.length}-character message`);
      assert.ok(r.count >= 1 && r.first <= r.last);
    }
    const manifests = pod.recent.filter((r) => r.volume === dirOf('hostile', 'empty'));
    assert.ok(manifests.length > 0 && manifests.every((r) => r.code === 'INTERNAL' && /broke the volume copy protocol .*is not a plain relative path/.test(r.message) && r.containers.includes(hostileApp)),
      JSON.stringify(manifests.slice(0, 2)));
    const status = pod.recent.find((r) => r.code === 'RESOURCE_EXHAUSTED' && r.volume === undefined);
    assert.ok(status, 'the long poll\'s error status is kept, with no volume');
    assert.match(status.message, /WatchVolumes: G+/);
    assert.ok(!status.message.includes('G'.repeat(MAX_MESSAGE_CHARS)), 'the guest\'s text is cut, not echoed');
    // The container's own view: its volumes' refusals; the other pod and its container have none.
    const own = await containerRefusals(hostileApp);
    assert.deepEqual(own?.recent.map((r) => r.message), pod.recent.map((r) => r.message));
    assert.deepEqual((await sandboxRefusals(ids.victim))?.recent, []);
    assert.deepEqual((await containerRefusals(victimApp))?.recent, []);
    const info = (await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: ids.hostile, verbose: true })).info.info!;
    assert.ok(info.length < 64 << 10, `verbose info of ${info.length} bytes`);
    // And `podvisor inspect` prints them.
    // (Not spawnSync: this process is the proxy the hostile pod's agent calls go through.)
    const cli = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', '--socket', env.daemon.socket, 'inspect', ids.hostile.slice(0, 12)], { encoding: 'utf8', timeout: 60_000 });
    assert.match(cli.stdout, new RegExp(`Write-back: +\\d+ guest answers refused or unanswered; the last ${MAX_REFUSALS}:`));
    assert.match(cli.stdout, /refused: +\S+ RESOURCE_EXHAUSTED \(long poll\): \S*WatchVolumes: G+/);
    assert.match(cli.stdout, /refused: +\S+ INTERNAL \/\S+\/hostile\/empty: the guest's answer for volume/);
    await othersUntouched();
  });

  test('a guest that never answers the long poll: bounded by the call\'s deadline, retried one at a time, the host serves on', async () => {
    await settle();
    const deadlineMs = WATCH_MS + WATCH_VOLUMES_MARGIN_MS;
    const fds = () => readdirSync(`/proc/${env.daemon.proc.pid}/fd`).length;
    const fdsBefore = fds();
    const rssBefore = rssKiB();
    const refusedBefore = (await sandboxRefusals(ids.hostile))?.total ?? 0;
    /** When each long poll reached the guest; the guest keeps every one unanswered. */
    const asked: number[] = [];
    proxy.before = (call) => {
      if (call.method !== 'WatchVolumes') return undefined;
      asked.push(performance.now());
      return { never: true };
    };
    const t0 = performance.now();
    // Meanwhile the host stalls nowhere: the other pod writes back, both pods answer CRI calls, the silent pod's other calls work.
    assert.equal((await exec(victimApp, 'echo during-silence > /data/during-silence')).code, 0);
    await waitFor('the victim\'s write-back while the other guest is silent', async () => (existsSync(join(dirOf('victim', 'empty'), 'during-silence')) ? true : undefined));
    guarded = guardedTree(); // that write is the victim's own; from here on nothing may change there
    assert.equal((await exec(hostileApp, 'echo still-serving')).out, 'still-serving');
    await waitFor('three unanswered long polls', async () => {
      await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: ids.victim });
      await unary(rt(), 'ListContainers', {});
      return asked.length >= 3 ? true : undefined;
    }, 4 * deadlineMs);
    const seconds = (performance.now() - t0) / 1000;
    const gaps = asked.slice(1).map((t, i) => Math.round(t - asked[i]!));
    console.log(`silent long poll: ${asked.length} calls in ${seconds.toFixed(1)} s, ${JSON.stringify(gaps)} ms apart (deadline ${deadlineMs} ms); podvisord fds ${fdsBefore} -> ${fds()}, RSS ${rssBefore >> 10} -> ${rssKiB() >> 10} MiB`);
    // Never a second one while one is outstanding (no pile-up), and none sooner than the deadline after the last (no busy loop).
    for (const g of gaps) assert.ok(g >= deadlineMs, `a long poll ${g} ms after the previous one, inside its ${deadlineMs} ms deadline`);
    assert.ok(asked.length <= Math.ceil((seconds * 1000) / deadlineMs) + 1, `${asked.length} long polls in ${seconds.toFixed(1)} s`);
    // Nothing grew, and the operator is told the guest does not answer.
    assert.ok(fds() <= fdsBefore + 4, `podvisord holds ${fds()} fds, ${fdsBefore} before`);
    assert.ok(rssKiB() - rssBefore < (64 * MAX_MESSAGE_LENGTH) >> 10, `podvisord grew from ${rssBefore >> 10} to ${rssKiB() >> 10} MiB`);
    const told = await sandboxRefusals(ids.hostile);
    assert.ok((told?.total ?? 0) > refusedBefore);
    assert.match(told!.recent.at(-1)!.message, /WatchVolumes: no answer within \d+ ms/);
    assert.equal(told!.recent.at(-1)!.code, 'DEADLINE_EXCEEDED');
    // Once the guest answers again, write-back resumes.
    proxy.before = undefined;
    assert.equal((await exec(hostileApp, 'echo after-silence > /data/after-silence')).code, 0);
    await waitFor('the silent pod\'s write-back to resume', async () => (existsSync(join(dirOf('hostile', 'empty'), 'after-silence')) ? true : undefined), 2 * deadlineMs);
    hostileBounded();
    await othersUntouched();
  });

  test('afterwards both pods write back as before', async () => {
    proxy.before = undefined;
    proxy.after = undefined;
    assert.equal((await exec(victimApp, 'echo victim-after > /data/after')).code, 0);
    assert.equal((await exec(hostileApp, 'echo hostile-after > /data/after')).code, 0);
    for (const pod of ['victim', 'hostile'] as const) {
      await waitFor(`${pod}'s write-back`, async () => (existsSync(join(dirOf(pod, 'empty'), 'after')) ? true : undefined));
    }
    assert.equal(readFileSync(join(dirOf('victim', 'empty'), 'seed'), 'utf8'), 'victim seed\n');
    console.log(`podvisord peak RSS over the file: ${peakRssKiB >> 10} MiB`);
  });

  // Last: it removes the hostile pod.
  test('StopPodSandbox and RemovePodSandbox of a guest silent on every call finish within kubelet\'s timeout and leave nothing', async () => {
    const vmPid = JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: ids.hostile, verbose: true })).info.info!).vm.pid as number;
    const fdsBefore = readdirSync(`/proc/${env.daemon.proc.pid}/fd`).length;
    // A write the host may not have seen yet: the stop's volume flush must give up on it, not wait for it.
    assert.equal((await exec(hostileApp, 'echo unflushed > /data/unflushed')).code, 0);
    proxy.before = () => ({ never: true });
    const kubeletTimeout = { deadline: Date.now() + 120_000 }; // kubelet's --runtime-request-timeout default
    const t0 = performance.now();
    await unary(rt(), 'StopPodSandbox', { pod_sandbox_id: ids.hostile }, kubeletTimeout);
    const stopMs = performance.now() - t0;
    await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: ids.hostile }, { deadline: Date.now() + 120_000 });
    console.log(`a silent guest: StopPodSandbox took ${(stopMs / 1000).toFixed(1)} s, RemovePodSandbox ${((performance.now() - t0 - stopMs) / 1000).toFixed(1)} s`);
    proxy.before = undefined;
    assert.ok(!running(vmPid), 'its QEMU is gone');
    for (const d of [join(env.dir, 'state', 'vms', ids.hostile), join(env.dir, 'state', 'volumes', ids.hostile)]) assert.ok(!existsSync(d), `${d} is removed`);
    const { items } = await unary(rt(), 'ListPodSandbox', {});
    assert.deepEqual(items.map((s) => s.id), [ids.victim]);
    assert.ok(readdirSync(`/proc/${env.daemon.proc.pid}/fd`).length <= fdsBefore, 'podvisord let go of the pod\'s sockets and files');
    // What the silent guest wrote last is on the host whole or not at all (the host keeps what it had).
    const unflushed = join(dirOf('hostile', 'empty'), 'unflushed');
    assert.ok(!existsSync(unflushed) || readFileSync(unflushed, 'utf8') === 'unflushed\n');
    assert.equal(readFileSync(join(dirOf('hostile', 'empty'), 'after'), 'utf8'), 'hostile-after\n');
    assert.equal(readFileSync(join(dirOf('victim', 'empty'), 'seed'), 'utf8'), 'victim seed\n');
    assert.equal((await containerState(env.daemon.client, victimApp)).state, 'CONTAINER_RUNNING');
  });
});

function lstatSafe(p: string) {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}

/** Whether a process runs (a zombie has exited; here PID 1 reaps orphans in its own time). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
