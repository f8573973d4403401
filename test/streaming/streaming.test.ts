import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { unary } from '../helpers/daemon.js';
import { collect, httpUpgrade, spdyCommand, spdyConnect, spdyForward, wsCommand, wsForward } from '../helpers/stream-clients.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import { containerConfig, rejectsWith, sandboxConfig, waitContainerState, waitFor } from '../helpers/cri.js';

/**
 * Exec, attach and port-forward end to end: a real podvisord, a real sandbox
 * VM, the CRI socket for Exec/Attach/PortForward and the streaming server's
 * URLs driven by test clients that speak SPDY/3.1 and WebSocket on the wire.
 */
describe('streaming: exec, attach, port-forward', () => {
  let env: PodTestEnv;
  let sandboxId: string;
  let shell: string;
  const rt = () => env.daemon.client.runtime;
  let earlyUrl: string;
  let earlyAt: number;

  const create = async (name: string, command: string[], extra: Record<string, unknown> = {}) => {
    const cfg = sandboxConfig('streams', join(env.dir, 'logs'));
    const id = (await unary(rt(), 'CreateContainer', { pod_sandbox_id: sandboxId, config: containerConfig(name, env.busybox, command, extra), sandbox_config: cfg })).container_id;
    await unary(rt(), 'StartContainer', { container_id: id });
    return id;
  };
  const execUrl = async (cmd: string[], opts: { tty?: boolean; stdin?: boolean; stderr?: boolean; container?: string } = {}) =>
    (await unary(rt(), 'Exec', {
      container_id: opts.container ?? shell, cmd, tty: !!opts.tty, stdin: !!opts.stdin, stdout: true, stderr: opts.stderr ?? !opts.tty,
    })).url;
  const execSync = async (cmd: string[]) => (await unary(rt(), 'ExecSync', { container_id: shell, cmd, timeout: 30 })).stdout.toString();

  before(async () => {
    // A machine shared by many emulated VMs can take minutes to boot one; that is not what this file tests.
    env = await startPodTestEnv({ startTimeoutMs: 300_000 }, '[daemon]\nboot_timeout_seconds = 900\n');
    await env.pull(env.busybox);
    sandboxId = (await unary(rt(), 'RunPodSandbox', { config: sandboxConfig('streams', join(env.dir, 'logs')) })).pod_sandbox_id;
    // The pod's only listener is on the VM's loopback: port-forward must go through the agent.
    shell = await create('shell', ['sh', '-c', 'nc -ll -p 9000 -e cat & while true; do sleep 1; done']);
    earlyUrl = await execUrl(['true']);
    earlyAt = Date.now();
  });

  after(async () => {
    await env?.dispose();
  });

  test('Exec returns a one-time URL on the streaming server; bad requests are refused', async () => {
    assert.match(earlyUrl, /^http:\/\/127\.0\.0\.1:\d+\/exec\/[A-Za-z0-9_-]{20,}$/);
    await rejectsWith(unary(rt(), 'Exec', { container_id: 'f'.repeat(64), cmd: ['true'], stdout: true }), 'NOT_FOUND');
    await rejectsWith(unary(rt(), 'Exec', { container_id: shell, cmd: [], stdout: true }), 'INVALID_ARGUMENT', /command/);
    await rejectsWith(unary(rt(), 'Exec', { container_id: shell, cmd: ['true'], tty: true, stdout: true, stderr: true }), 'INVALID_ARGUMENT', /tty and stderr/);
    await rejectsWith(unary(rt(), 'PortForward', { pod_sandbox_id: 'nope', port: [80] }), 'NOT_FOUND');
  });

  test('exec without a tty over SPDY v4: stdout and stderr apart, exit codes as a Status', async () => {
    const ok = await spdyCommand(await execUrl(['sh', '-c', 'echo out; echo err >&2']));
    assert.equal(ok.stdout.toString(), 'out\n');
    assert.equal(ok.stderr.toString(), 'err\n');
    assert.equal(ok.exitCode, 0);
    assert.equal(JSON.parse(ok.error).status, 'Success');
    const failed = await spdyCommand(await execUrl(['sh', '-c', 'echo partial; exit 3']));
    assert.equal(failed.stdout.toString(), 'partial\n');
    assert.equal(failed.exitCode, 3);
    const status = JSON.parse(failed.error);
    assert.equal(status.reason, 'NonZeroExitCode');
    assert.deepEqual(status.details.causes, [{ reason: 'ExitCode', message: '3' }]);
    // A command that cannot start is a Failure Status with the reason, not a hang.
    await assert.rejects(spdyCommand(await execUrl(['/no/such/binary'])), /"status":"Failure".*not found/);
  });

  test('older SPDY protocols: v3, v2 and channel.k8s.io carry the error as text', async () => {
    for (const protocol of ['v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io']) {
      const res = await spdyCommand(await execUrl(['sh', '-c', 'echo hi; exit 4']), { protocols: [protocol] });
      assert.equal(res.stdout.toString(), 'hi\n', protocol);
      assert.match(res.error, /non-zero exit code.*exit code 4/, protocol);
    }
    // A client offering nothing the server speaks is refused with the accepted list.
    const refused = await httpUpgrade(await execUrl(['true']), 'SPDY/3.1', [['X-Stream-Protocol-Version', 'v9.channel.k8s.io']]);
    assert.equal(refused.status, 403);
    assert.ok(refused.headers['x-accepted-stream-protocol-versions']?.includes('v4.channel.k8s.io'));
  });

  test('exec with a tty: output, resize reaches the terminal, exit code', async () => {
    const res = await spdyCommand(await execUrl(['sh', '-c', 'sleep 2; stty size; exit 5'], { tty: true }), { tty: true, resizes: [{ Width: 123, Height: 45 }] });
    assert.match(res.stdout.toString(), /45 123/);
    assert.equal(res.exitCode, 5);
  });

  test('stdin: tar into the container and back out (what kubectl cp does)', async () => {
    const src = join(env.dir, 'cp-src');
    mkdirSync(join(src, 'sub'), { recursive: true });
    const big = randomBytes(3 << 20);
    writeFileSync(join(src, 'big.bin'), big);
    writeFileSync(join(src, 'sub', 'small.txt'), 'hello from the host\n');
    const tarIn = execFileSync('tar', ['-c', '-C', src, '.'], { maxBuffer: 64 << 20 });
    const put = await spdyCommand(await execUrl(['sh', '-c', 'mkdir -p /tmp/cp && tar -x -C /tmp/cp'], { stdin: true }), { stdin: tarIn });
    assert.equal(put.exitCode, 0, put.stderr.toString());
    const get = await spdyCommand(await execUrl(['tar', '-c', '-C', '/tmp/cp', '.']));
    assert.equal(get.exitCode, 0, get.stderr.toString());
    const dst = join(env.dir, 'cp-dst');
    mkdirSync(dst);
    execFileSync('tar', ['-x', '-C', dst], { input: get.stdout, maxBuffer: 64 << 20 });
    assert.ok(readFileSync(join(dst, 'big.bin')).equals(big), 'the 3 MiB file came back byte for byte');
    assert.equal(readFileSync(join(dst, 'sub', 'small.txt'), 'utf8'), 'hello from the host\n');
  });

  test('exec over WebSocket: v5 (stdin closed by signal), v4, v4.base64, channel.k8s.io', async () => {
    const v5 = await wsCommand(await execUrl(['sh', '-c', 'cat; echo done >&2; exit 2'], { stdin: true }), { protocol: 'v5.channel.k8s.io', stdin: Buffer.from('through stdin\n') });
    assert.equal(v5.protocol, 'v5.channel.k8s.io');
    assert.equal(v5.stdout.toString(), 'through stdin\n');
    assert.equal(v5.stderr.toString(), 'done\n');
    assert.equal(v5.exitCode, 2);
    for (const protocol of ['v4.channel.k8s.io', 'v4.base64.channel.k8s.io']) {
      const res = await wsCommand(await execUrl(['sh', '-c', 'echo hi; echo e >&2; exit 7']), { protocol });
      assert.equal(res.protocol, protocol);
      assert.equal(res.stdout.toString(), 'hi\n', protocol);
      assert.equal(res.stderr.toString(), 'e\n', protocol);
      assert.equal(res.exitCode, 7, protocol);
    }
    const old = await wsCommand(await execUrl(['sh', '-c', 'echo old; exit 1']), { protocol: 'channel.k8s.io' });
    assert.equal(old.stdout.toString(), 'old\n');
    assert.match(old.error, /exit code 1/);
  });

  test('attach with a tty: what is typed reaches the container, its output comes back', async () => {
    const id = await create('tty', ['sh'], { stdin: true, tty: true });
    const url = (await unary(rt(), 'Attach', { container_id: id, stdin: true, tty: true, stdout: true })).url;
    const client = await spdyConnect(url, ['v4.channel.k8s.io']);
    const error = await client.open({ streamtype: 'error' });
    const stdin = await client.open({ streamtype: 'stdin' });
    const stdout = await client.open({ streamtype: 'stdout' });
    const resize = await client.open({ streamtype: 'resize' });
    let seen = '';
    stdout.on('data', (d) => { seen += d.toString(); });
    stdin.write(Buffer.from('echo attached-$((6*7))\n'));
    await waitFor('the echo through the tty', async () => (seen.includes('attached-42') ? true : undefined), 30_000);
    // A resize on the attach reaches the container's own terminal.
    resize.write(Buffer.from(JSON.stringify({ Width: 77, Height: 22 })));
    await waitFor('the new size on the container terminal', async () => {
      stdin.write(Buffer.from('stty size\n'));
      await new Promise((r) => setTimeout(r, 1000));
      return /22 77/.test(seen) ? true : undefined;
    }, 60_000);
    stdin.write(Buffer.from('exit 6\n'));
    const status = (await collect(error)).toString();
    assert.equal(JSON.parse(status).details.causes[0].message, '6');
    client.close();
  });

  test('attach without a tty, stdin_once: stdin closes when the first attach detaches', async () => {
    const id = await create('once', ['sh', '-c', 'while read line; do echo "got:$line"; echo "err:$line" >&2; done; echo eof'], { stdin: true, stdin_once: true });
    const url = (await unary(rt(), 'Attach', { container_id: id, stdin: true, stdout: true, stderr: true })).url;
    const client = await spdyConnect(url, ['v4.channel.k8s.io']);
    await client.open({ streamtype: 'error' });
    const stdin = await client.open({ streamtype: 'stdin' });
    const stdout = await client.open({ streamtype: 'stdout' });
    const stderr = await client.open({ streamtype: 'stderr' });
    let out = '';
    let err = '';
    stdout.on('data', (d) => { out += d.toString(); });
    stderr.on('data', (d) => { err += d.toString(); });
    stdin.write(Buffer.from('one\n'));
    await waitFor('the reply on stdout and stderr', async () => (out.includes('got:one') && err.includes('err:one') ? true : undefined), 30_000);
    // Detach (the client goes away): stdin_once closes the container's stdin, so its loop ends.
    client.close();
    await waitContainerState(env.daemon.client, id, 'CONTAINER_EXITED', 30_000);
    // A second attach to an exited container is refused.
    await rejectsWith(unary(rt(), 'Attach', { container_id: id, stdin: true, stdout: true }), 'FAILED_PRECONDITION', /EXITED/);
  });

  test('port-forward over SPDY reaches a server on the pod VM loopback, through the agent', async () => {
    const url = (await unary(rt(), 'PortForward', { pod_sandbox_id: sandboxId, port: [9000, 9001] })).url;
    const client = await spdyConnect(url, ['portforward.k8s.io']);
    assert.equal(client.protocol, 'portforward.k8s.io');
    const payload = randomBytes(512 * 1024);
    const [a, b] = await Promise.all([
      spdyForward(client, 9000, '1', Buffer.from('hello through the agent\n')),
      spdyForward(client, 9000, '2', payload),
    ]);
    assert.equal(a.received.toString(), 'hello through the agent\n');
    assert.equal(a.error, '');
    assert.ok(b.received.equals(payload), `echoed ${b.received.length} of ${payload.length} bytes`);
    // Nothing listens on 9001: the error stream says so and the session carries on.
    const refused = await spdyForward(client, 9001, '3', Buffer.from('x'));
    assert.match(refused.error, /error forwarding port 9001 to pod .*9001/);
    // A port the PortForward request did not name is refused on its error stream.
    const unlisted = await spdyForward(client, 9002, '4', Buffer.from('x'));
    assert.match(unlisted.error, /port 9002 was not among the ports of this port-forward request \(9000, 9001\)/);
    client.close();
  });

  test('port-forward over WebSocket (v4.channel.k8s.io framing)', async () => {
    const url = (await unary(rt(), 'PortForward', { pod_sandbox_id: sandboxId, port: [9000] })).url;
    const res = await wsForward(url, 9000, Buffer.from('over websocket\n'), { expectBytes: 15 });
    assert.deepEqual(res.portHeaders, [9000, 9000]);
    assert.equal(res.received.toString(), 'over websocket\n');
  });

  test('20 concurrent exec sessions each get their own output and exit code', async () => {
    const runs = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      const res = await spdyCommand(await execUrl(['sh', '-c', `echo session-${i}; sleep 1; exit ${i % 5}`]));
      return { i, ...res };
    }));
    for (const r of runs) {
      assert.equal(r.stdout.toString(), `session-${r.i}\n`);
      assert.equal(r.exitCode, r.i % 5);
    }
  });

  test('a reader that stops and goes on gets every byte in order (the guest was held back, not dropped)', async () => {
    // ~10.9 MB with the client stopped for 5 s: whatever held it back on the way (socket buffers, the
    // session's queue, the guest's pause), every byte must arrive, in order, and the exit status after it.
    const client = await spdyConnect(await execUrl(['seq', '1', '1500000']), ['v4.channel.k8s.io']);
    const error = await client.open({ streamtype: 'error' });
    error.end();
    const status = collect(error);
    const out = await client.open({ streamtype: 'stdout' });
    out.end();
    (await client.open({ streamtype: 'stderr' })).end();
    const chunks: Buffer[] = [];
    let got = 0;
    out.on('data', (d) => { chunks.push(d); got += d.length; });
    await waitFor('some output', async () => (got > 0 ? true : undefined), 60_000);
    client.session.pauseReading(true);
    await new Promise((r) => setTimeout(r, 5000));
    client.session.pauseReading(false);
    const text = (await status).toString();
    await waitFor('the end of stdout', async () => (out.remoteEnded ? true : undefined), 120_000);
    client.close();
    assert.equal(JSON.parse(text).status, 'Success', text);
    const expected = Array.from({ length: 1_500_000 }, (_, i) => `${i + 1}\n`).join('');
    const received = Buffer.concat(chunks).toString();
    assert.equal(received.length, expected.length);
    assert.ok(received === expected, 'stdout is the whole sequence, in order');
  });

  test('a slow reader of a huge output blocks nobody else; clients that vanish (SPDY exec, WebSocket exec, port-forward) leave nothing behind', async () => {
    const daemonFds = () => readdirSync(`/proc/${env.daemon.proc.pid}/fd`).length;
    const fdsBefore = daemonFds();
    // A reader that stops reading: the exec's output is held back in the guest, not buffered without bound.
    const slow = await spdyConnect(await execUrl(['sh', '-c', 'yes streaming-test-line']), ['v4.channel.k8s.io']);
    await slow.open({ streamtype: 'error' });
    const out = await slow.open({ streamtype: 'stdout' });
    await slow.open({ streamtype: 'stderr' });
    let got = 0;
    out.on('data', (d) => { got += d.length; });
    await waitFor('some output', async () => (got > 0 ? true : undefined), 30_000);
    slow.session.pauseReading(true);
    // Meanwhile another session works.
    const other = await spdyCommand(await execUrl(['echo', 'not blocked']));
    assert.equal(other.stdout.toString(), 'not blocked\n');
    // A port-forward client that vanishes mid-connection.
    const pf = await spdyConnect((await unary(rt(), 'PortForward', { pod_sandbox_id: sandboxId, port: [9000] })).url, ['portforward.k8s.io']);
    await pf.open({ streamtype: 'error', port: '9000', requestid: '1' });
    const data = await pf.open({ streamtype: 'data', port: '9000', requestid: '1' });
    let echoed = '';
    data.on('data', (d) => { echoed += d.toString(); });
    data.write(Buffer.from('ping\n'));
    await waitFor('the echo', async () => (echoed === 'ping\n' ? true : undefined), 30_000);
    // A WebSocket exec client mid-stream as well.
    const ws = new WebSocket((await execUrl(['sh', '-c', 'yes websocket-test-line'])).replace(/^http/, 'ws'), ['v5.channel.k8s.io']);
    let wsGot = 0;
    ws.on('message', (m: Buffer) => { wsGot += m.length; });
    ws.on('error', () => undefined);
    await waitFor('websocket output', async () => (wsGot > 0 ? true : undefined), 30_000);
    // All three clients vanish without a goodbye.
    slow.close();
    pf.close();
    ws.terminate();
    await waitFor('both execs killed in the guest', async () => (execSync(['ps', '-o', 'args']).then((ps) => (ps.includes('yes streaming-test-line') || ps.includes('yes websocket-test-line') ? undefined : true))), 30_000);
    // No forwarded connection stays open in the guest: only the listener has port 9000 (0x2328).
    await waitFor('no established connection to port 9000', async () => {
      const tcp = await execSync(['cat', '/proc/net/tcp']);
      const established = tcp.split('\n').filter((l) => / 0100007F:2328 .* 01 /.test(l) || /:2328 0100007F:[0-9A-F]{4} 01 /.test(l));
      return established.length === 0 ? true : undefined;
    }, 30_000);
    await waitFor('the daemon back to its open fds', async () => (daemonFds() <= fdsBefore ? true : undefined), 30_000);
  });

  test('a used or expired token is refused', async () => {
    const url = await execUrl(['true']);
    assert.equal((await spdyCommand(url)).exitCode, 0);
    const reused = await httpUpgrade(url, 'SPDY/3.1', [['X-Stream-Protocol-Version', 'v4.channel.k8s.io']]);
    assert.equal(reused.status, 404);
    assert.match(reused.body, /unknown, used or expired/);
    // The URL made before the first test is over a minute old by now (waits for the rest if the run was fast).
    const wait = earlyAt + 61_000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const expired = await httpUpgrade(earlyUrl, 'SPDY/3.1', [['X-Stream-Protocol-Version', 'v4.channel.k8s.io']]);
    assert.equal(expired.status, 404);
  });

  test('exec in a stopped container is FailedPrecondition', async () => {
    const id = await create('stopped', ['sh', '-c', 'exit 0']);
    await waitContainerState(env.daemon.client, id, 'CONTAINER_EXITED', 30_000);
    await rejectsWith(unary(rt(), 'Exec', { container_id: id, cmd: ['true'], stdout: true }), 'FAILED_PRECONDITION', /EXITED/);
    await rejectsWith(unary(rt(), 'Attach', { container_id: id, stdout: true }), 'FAILED_PRECONDITION');
  });
});
