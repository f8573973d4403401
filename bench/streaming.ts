/**
 * Streaming against its baselines, in one run:
 * - Exec (CRI call, connect to the URL over SPDY, first stdout byte) vs ExecSync of the same command;
 * - exec stdout throughput and port-forward throughput (SPDY, guest -> client) vs the raw agent
 *   channel's output throughput (target: >= 80 %).
 *
 * The raw channel is measured on a guest of its own (the bench's agent client reads container
 * stdout events straight off the channel), booted beside the pod. All three transfers use the
 * same producer in the guest (`dd bs=64k` from /dev/zero), and the rounds alternate raw, exec,
 * port-forward, so a machine whose load changes during the run shifts all three alike. Each
 * round's ratio is against that round's raw figure; the medians are printed.
 *
 *   node --import tsx bench/streaming.ts [--mib 32] [--rounds 5]
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { bootGuest, type BootedGuest } from '../test/helpers/guest.js';
import { unary } from '../test/helpers/daemon.js';
import { spdyCommand, spdyConnect } from '../test/helpers/stream-clients.js';
import { startPodTestEnv, type PodTestEnv } from '../test/helpers/pod-env.js';
import { containerConfig, sandboxConfig } from '../test/helpers/cri.js';
import { median, prepareChannelBench, type ChannelBench } from './agent-channel.js';

const { values } = parseArgs({ options: { mib: { type: 'string', default: '32' }, rounds: { type: 'string', default: '5' } } });
const mib = Number(values.mib);
const rounds = Number(values.rounds);
const bytes = mib << 20;
const produce = ['dd', 'if=/dev/zero', 'bs=65536', `count=${mib * 16}`];

let guest: BootedGuest | undefined;
let channel: ChannelBench | undefined;
let env: PodTestEnv | undefined;
try {
  // A shared, loaded machine can take minutes to boot a guest.
  guest = await bootGuest({}, { deadlineMs: 900_000 });
  channel = await prepareChannelBench(guest);
  env = await startPodTestEnv({ logLevel: 'info', startTimeoutMs: 300_000 }, '[daemon]\nboot_timeout_seconds = 900\n');
  await env.pull(env.busybox);
  const rt = env.daemon.client.runtime;
  const cfg = sandboxConfig('bench-streams', join(env.dir, 'logs'));
  const sandboxId = (await unary(rt, 'RunPodSandbox', { config: cfg })).pod_sandbox_id;
  // A server on the pod's loopback that sends `bytes` to whoever connects (busybox nc -e runs the script on the socket).
  const serve = `printf '#!/bin/sh\\n${produce.join(' ')} 2>/dev/null\\n' > /tmp/send.sh; chmod +x /tmp/send.sh; nc -ll -p 9100 -e /tmp/send.sh & while true; do sleep 1; done`;
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

  /** MB/s between the first and the last byte the client received. */
  const rate = (got: number, first: number, last: number, what: string) => {
    if (got !== bytes) throw new Error(`${what} gave ${got} of ${bytes} bytes`);
    return bytes / 1e6 / ((last - first) / 1000);
  };

  const execOnce = async () => {
    const { url } = await unary(rt, 'Exec', { container_id: containerId, cmd: produce, stdout: true, stderr: true });
    let got = 0;
    let first = 0;
    let last = 0;
    await spdyCommand(url, { keepStdout: false, onStdout: (d) => { got += d.length; first ||= performance.now(); last = performance.now(); } });
    return rate(got, first, last, 'exec');
  };

  const portForwardOnce = async () => {
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
    return rate(got, first, last, 'port-forward');
  };

  const raw: number[] = [];
  const exec: number[] = [];
  const pf: number[] = [];
  for (let i = 0; i < rounds; i++) {
    raw.push(await channel.output(mib));
    exec.push(await execOnce());
    pf.push(await portForwardOnce());
    console.log(`round ${i + 1}: raw channel ${raw[i].toFixed(1)} MB/s, exec ${exec[i].toFixed(1)} MB/s (${pct(exec[i], raw[i])}), port-forward ${pf[i].toFixed(1)} MB/s (${pct(pf[i], raw[i])})`);
  }

  const execRatio = median(exec.map((v, i) => v / raw[i]));
  const pfRatio = median(pf.map((v, i) => v / raw[i]));
  console.log(`Exec to first stdout byte (CRI call + SPDY connect + streams): median ${median(execFirst).toFixed(0)} ms vs ExecSync of the same command ${median(execSync).toFixed(0)} ms (ratio ${(median(execFirst) / median(execSync)).toFixed(2)})`);
  console.log(`raw agent channel output (own guest, same run, ${mib} MiB from dd): median ${median(raw).toFixed(1)} MB/s`);
  console.log(`exec stdout over SPDY: median ${median(exec).toFixed(1)} MB/s; median of per-round ratios ${(execRatio * 100).toFixed(0)} % of the channel`);
  console.log(`port-forward over SPDY, pod -> client: median ${median(pf).toFixed(1)} MB/s; median of per-round ratios ${(pfRatio * 100).toFixed(0)} % of the channel`);
} finally {
  await env?.dispose();
  await channel?.dispose().catch(() => undefined);
  await guest?.stop();
}

function pct(v: number, of: number): string {
  return `${((v / of) * 100).toFixed(0)} %`;
}
