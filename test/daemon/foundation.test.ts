import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { runDaemonToExit, startDaemon, unary, type RunningDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/wait.js';

describe('podvisord over its real socket', () => {
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon();
  });
  after(async () => {
    await d.dispose();
  });

  test('Version names podvisor and CRI v1', async () => {
    const v = await unary(d.client.runtime, 'Version', { version: '0.1.0' });
    assert.equal(v.runtime_name, 'podvisor');
    assert.equal(v.runtime_api_version, 'v1');
    assert.match(v.runtime_version, /^\d+\.\d+\.\d+/);
  });

  test('at debug level each request is logged with its duration', async () => {
    await unary(d.client.runtime, 'Version', {});
    // The line comes through the daemon's stdout pipe: a loaded host can take seconds to deliver it.
    await waitFor('the request log line', () => (/"rpc":"Version","ms":[\d.]+/.test(d.output()) ? true : undefined), 60_000, 50).catch(() => undefined);
    assert.match(d.output(), /"component":"cri","rpc":"Version","ms":[\d.]+/);
  });

  test('Status reports both conditions with reasons and the runtime handlers', async () => {
    const s = await unary(d.client.runtime, 'Status', { verbose: true });
    const types = s.status!.conditions.map((c) => c.type).sort();
    assert.deepEqual(types, ['NetworkReady', 'RuntimeReady']);
    for (const c of s.status!.conditions) {
      if (!c.status) assert.ok(c.reason.length > 0 && c.message.length > 0, `${c.type} is false without a reason`);
    }
    assert.deepEqual(s.runtime_handlers.map((h) => h.name).sort(), ['', 'kata']);
    const info = JSON.parse(s.info.config!);
    assert.deepEqual(info.handlers, ['', 'kata']);
    const accel = JSON.parse(s.info.accelerator!);
    assert.ok(['kvm', 'tcg'].includes(accel.accel));
    assert.ok(accel.reason.length > 0);
  });

  test('RuntimeConfig reports the cgroupfs driver', async () => {
    const r = await unary(d.client.runtime, 'RuntimeConfig', {});
    assert.equal(r.linux!.cgroup_driver, 'CGROUPFS');
  });

  test('UpdateRuntimeConfig keeps the pod CIDR and refuses a bad one', async () => {
    await unary(d.client.runtime, 'UpdateRuntimeConfig', { runtime_config: { network_config: { pod_cidr: '10.88.0.0/16' } } });
    const s = await unary(d.client.runtime, 'Status', { verbose: true });
    assert.equal(JSON.parse(s.info.config!).podCidr, '10.88.0.0/16');
    assert.equal(JSON.parse(readFileSync(join(d.state, 'runtime-config.json'), 'utf8')).podCidr, '10.88.0.0/16');
    await assert.rejects(
      unary(d.client.runtime, 'UpdateRuntimeConfig', { runtime_config: { network_config: { pod_cidr: '10.88.0.0/99' } } }),
      (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /10\.88\.0\.0\/99/.test(e.details),
    );
  });

  test('an RPC that is not built yet answers UNIMPLEMENTED and names itself', async () => {
    await assert.rejects(unary(d.client.runtime, 'CheckpointContainer', { container_id: 'x', location: '/tmp/x' }), (e: grpc.ServiceError) => {
      assert.equal(e.code, grpc.status.UNIMPLEMENTED);
      assert.match(e.details, /RuntimeService\/CheckpointContainer/);
      return true;
    });
  });

  test('a request whose bytes do not decode is INVALID_ARGUMENT, and the daemon keeps serving', async () => {
    const raw = new grpc.Client(`unix:${d.socket}`, grpc.credentials.createInsecure());
    try {
      // A field tag whose varint never ends.
      const garbage = Buffer.from([0xff, 0xff, 0xff]);
      const err = await new Promise<grpc.ServiceError>((resolve) =>
        raw.makeUnaryRequest('/runtime.v1.RuntimeService/Version', (b: Buffer) => b, (b: Buffer) => b, garbage, (e) => resolve(e!)),
      );
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.match(err.details, /could not be decoded/);
    } finally {
      raw.close();
    }
    const v = await unary(d.client.runtime, 'Version', {});
    assert.equal(v.runtime_name, 'podvisor');
  });

  test('the socket is mode 0600', () => {
    assert.equal(statSync(d.socket).mode & 0o777, 0o600);
  });

  test('a second daemon on the same socket refuses to start and the first keeps serving', async () => {
    const second = await runDaemonToExit(d.dir);
    assert.equal(second.code, 1);
    assert.match(second.output, /already serving on .*cri\.sock/);
    const v = await unary(d.client.runtime, 'Version', {});
    assert.equal(v.runtime_name, 'podvisor');
  });
});

describe('podvisord start and stop', () => {
  const dirs: string[] = [];
  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'pvd-'));
    dirs.push(dir);
    return dir;
  };
  after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

  test('a stale socket left by a crashed daemon is replaced', async () => {
    const dir = tempDir();
    const socket = join(dir, 'cri.sock');
    // A process that binds the path and dies by SIGKILL leaves the socket file behind, as a crash would.
    const holder = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socket)}, () => console.log('up'))`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise((r) => holder.stdout!.once('data', r));
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('exit', r));
    assert.ok(statSync(socket).isSocket());

    const d = await startDaemon({ dir });
    try {
      const v = await unary(d.client.runtime, 'Version', {});
      assert.equal(v.runtime_name, 'podvisor');
    } finally {
      await d.dispose();
    }
  });

  test('SIGTERM: exits 0 and removes its socket', async () => {
    const d = await startDaemon({ dir: tempDir() });
    d.client.close();
    assert.equal(await d.stop('SIGTERM'), 0);
    assert.ok(!existsSync(d.socket));
    assert.match(d.output(), /VMs keep running/);
  });

  test('an unknown config key refuses to start, naming the key and the file', async () => {
    const dir = tempDir();
    const r = await runDaemonToExit(dir, { config: '[runtimes.kata]\nmemory_mb = 512\n' });
    assert.equal(r.code, 2);
    assert.match(r.output, /runtimes\.kata\.memory_mb/);
    assert.match(r.output, /podvisor\.toml/);
    assert.match(r.output, /not a known setting/);
    assert.ok(!existsSync(join(dir, 'cri.sock')));
  });

  test('a bad value refuses to start with the key and the problem', async () => {
    const r = await runDaemonToExit(tempDir(), { config: '[runtimes.kata]\nvcpus = "two"\n' });
    assert.equal(r.code, 2);
    assert.match(r.output, /runtimes\.kata\.vcpus" must be an integer/);
  });

  test('a bad flag prints usage and exits 2', async () => {
    const r = await runDaemonToExit(tempDir(), { extraArgs: ['--no-such-flag'] });
    assert.equal(r.code, 2);
    assert.match(r.output, /Usage: podvisord/);
  });

  test('crictl-style defaults: a config with mirrors and a custom handler loads', async () => {
    const d = await startDaemon({
      dir: tempDir(),
      config: [
        '[registry.mirrors."registry.k8s.io"]',
        'endpoints = ["http://127.0.0.1:5000"]',
        '[runtimes.big]',
        'vcpus = 2',
        'memory_mib = 1024',
      ].join('\n'),
    });
    try {
      const s = await unary(d.client.runtime, 'Status', { verbose: true });
      assert.deepEqual(s.runtime_handlers.map((h) => h.name).sort(), ['', 'big', 'kata']);
      assert.deepEqual(JSON.parse(s.info.config!).registryMirrors, ['registry.k8s.io']);
    } finally {
      await d.dispose();
    }
  });
});

