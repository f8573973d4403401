/**
 * Streaming against its baselines, in one run:
 * - Exec (CRI call, connect to the URL over SPDY, first stdout byte) vs ExecSync of the same command;
 * - exec stdout throughput and port-forward throughput (SPDY, guest -> client) vs the raw agent
 *   channel's output throughput measured on a guest booted in the same run (target: >= 80 %).
 *
 *   node --import tsx bench/streaming.ts [--mib 32] [--rounds 5]
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { bootGuest } from '../test/helpers/guest.js';
import { unary } from '../test/helpers/daemon.js';
import { spdyCommand, spdyConnect } from '../test/helpers/stream-clients.js';
import { startPodTestEnv } from '../test/helpers/pod-env.js';
import { containerConfig, sandboxConfig } from '../test/helpers/cri.js';
import { measureChannel, median } from './agent-channel.js';

const { values } = parseArgs({ options: { mib: { type: 'string', default: '32' }, rounds: { type: 'string', default: '5' } } });
const mib = Number(values.mib);
const rounds = Number(values.rounds);
const bytes = mib << 20;

// 1. The raw channel: container stdout pushed as agent events, on a guest of its own.
const guest = await bootGuest({}, { deadlineMs: 900_000 }); // a shared, loaded machine can take minutes
let channelMBps: number;
try {
  channelMBps = (await measureChannel(guest, { calls: 50, mib })).outputMBps;
} finally {
  await guest.stop();
}

// 2. The same guest image behind podvisord, reached through the streaming server.
const env = await startPodTestEnv({ logLevel: 'info', startTimeoutMs: 300_000 }, '[daemon]\nboot_timeout_seconds = 900\n');
try {
  await env.pull(env.busybox);
  const rt = env.daemon.client.runtime;
  const cfg = sandboxConfig('bench-streams', join(env.dir, 'logs'));
  const sandboxId = (await unary(rt, 'RunPodSandbox', { config: cfg })).pod_sandbox_id;
  // A server on the pod's loopback that sends `bytes` to whoever connects.
  const serve = `printf '#!/bin/sh\\nhead -c ${bytes} /dev/zero\\n' > /tmp/send.sh; chmod +x /tmp/send.sh; nc -ll -p 9100 -e /tmp/send.sh & while true; do sleep 1; done`;
  const containerId = (await unary(rt, 'CreateContainer', { pod_sandbox_id: sandboxId, sandbox_config: cfg, config: containerConfig('bench', env.busybox, ['sh', '-c', serve]) })).container_id;
  await unary(rt, 'StartContainer', { container_id: containerId });
  await new Promise((r) => setTimeout(r, 1000));

  const cmd = ['echo', 'first byte'];
  const execSync: number[] = [];
  const execFirst: number[] = [];
  for (let i = 0; i < rounds; i++) {
    let t = performance.now();
    await unary(rt, 'ExecSync', { container_id: containerId, cmd, timeout: 30 });
    execSync.push(performance.now() - t);
    t = performance.now();
    let first = 0;
    const { url } = await unary(rt, 'Exec', { container_id: containerId, cmd, stdout: true, stderr: true });
    await spdyCommand(url, { onStdout: () => { first ||= performance.now() - t; } });
    execFirst.push(first);
  }

  // Exec stdout throughput, first to last byte at the client.
  const execRates: number[] = [];
  for (let i = 0; i < Math.min(rounds, 3); i++) {
    const { url } = await unary(rt, 'Exec', { container_id: containerId, cmd: ['head', '-c', String(bytes), '/dev/zero'], stdout: true, stderr: true });
    let got = 0;
    let first = 0;
    let last = 0;
    await spdyCommand(url, { onStdout: (d) => { got += d.length; first ||= performance.now(); last = performance.now(); } });
    if (got !== bytes) throw new Error(`exec gave ${got} of ${bytes} bytes`);
    execRates.push(bytes / 1e6 / ((last - first) / 1000));
  }

  // Port-forward throughput, first to last byte at the client.
  const pfRates: number[] = [];
  for (let i = 0; i < Math.min(rounds, 3); i++) {
    const { url } = await unary(rt, 'PortForward', { pod_sandbox_id: sandboxId, port: [9100] });
    const client = await spdyConnect(url, ['portforward.k8s.io']);
    const error = await client.open({ streamtype: 'error', port: '9100', requestid: '0' });
    error.end();
    const data = await client.open({ streamtype: 'data', port: '9100', requestid: '0' });
    let got = 0;
    let first = 0;
    let last = 0;
    await new Promise<void>((resolve) => {
      data.on('data', (d) => { got += d.length; first ||= performance.now(); last = performance.now(); });
      data.once('end', () => resolve());
      data.once('reset', () => resolve());
    });
    data.end();
    client.close();
    if (got !== bytes) throw new Error(`port-forward gave ${got} of ${bytes} bytes`);
    pfRates.push(bytes / 1e6 / ((last - first) / 1000));
  }

  const execMBps = median(execRates);
  const pfMBps = median(pfRates);
  console.log(`Exec to first stdout byte (CRI call + SPDY connect + streams): median ${median(execFirst).toFixed(0)} ms vs ExecSync of the same command ${median(execSync).toFixed(0)} ms (ratio ${(median(execFirst) / median(execSync)).toFixed(2)})`);
  console.log(`raw agent channel output (same run, own guest): ${channelMBps.toFixed(1)} MB/s`);
  console.log(`exec stdout over SPDY: ${execMBps.toFixed(1)} MB/s (${((execMBps / channelMBps) * 100).toFixed(0)} % of the channel)`);
  console.log(`port-forward over SPDY, pod -> client: ${pfMBps.toFixed(1)} MB/s (${((pfMBps / channelMBps) * 100).toFixed(0)} % of the channel)`);
} finally {
  await env.dispose();
}
