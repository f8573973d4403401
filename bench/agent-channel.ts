/**
 * The agent channel's speed on a booted guest: round-trip time of Health over
 * ttRPC on virtio-serial, and stream throughput of container output pushed as
 * events (guest -> host) and of WriteStdin (host -> guest).
 *
 *   node --import tsx bench/agent-channel.ts [--calls 300] [--mib 32]
 */
import { parseArgs } from 'node:util';
import type { AgentClient } from '../src/agent-client/index.js';
import { bootGuest, busyboxRootfsDisk, busyboxSpec, type BootedGuest } from '../test/helpers/guest.js';

export interface ChannelFigures {
  rttMs: { median: number; p90: number; min: number };
  outputMBps: number;
  stdinMBps: number;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

async function roundTrips(agent: AgentClient, calls: number): Promise<number[]> {
  for (let i = 0; i < 20; i++) await agent.health(); // warm up both ends
  const times: number[] = [];
  for (let i = 0; i < calls; i++) {
    const t = process.hrtime.bigint();
    await agent.health();
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return times;
}

/** MB/s of container stdout reaching the host, timed from first to last byte. */
async function outputThroughput(guest: BootedGuest, rootImage: string, mib: number): Promise<number> {
  const { agent } = guest;
  const root = '/run/podvisor/rootfs/bench-out';
  await agent.mountOverlay({ lowerDirs: [rootImage], target: root });
  await agent.createContainer({ containerId: 'bench-out', ociSpecJson: busyboxSpec(root, ['dd', 'if=/dev/zero', 'bs=65536', `count=${mib * 16}`]) });
  let bytes = 0;
  let first = 0n;
  let last = 0n;
  const onOutput = (o: { containerId: string; stream: string; data: Uint8Array }) => {
    if (o.containerId !== 'bench-out' || o.stream !== 'STDOUT') return;
    if (!first) first = process.hrtime.bigint();
    last = process.hrtime.bigint();
    bytes += o.data.length;
  };
  // Only counted, never kept or decoded: the client's own work must not hold the channel back.
  let exited!: () => void;
  const exit = new Promise<void>((resolve) => { exited = resolve; });
  const onExit = (e: { containerId: string; execId: string }) => { if (e.containerId === 'bench-out' && !e.execId) exited(); };
  agent.on('output', onOutput);
  agent.on('exit', onExit);
  await agent.startContainer('bench-out');
  await exit;
  agent.off('output', onOutput);
  agent.off('exit', onExit);
  await agent.deleteContainer({ containerId: 'bench-out' });
  await agent.unmount({ path: root, removeDir: true });
  if (bytes !== mib << 20) throw new Error(`expected ${mib} MiB of output, got ${bytes} bytes`);
  return bytes / 1e6 / (Number(last - first) / 1e9);
}

/** MB/s of WriteStdin into `cat > /dev/null` (64 KiB per call, 4 in flight). */
async function stdinThroughput(guest: BootedGuest, rootImage: string, mib: number): Promise<number> {
  const { agent } = guest;
  const root = '/run/podvisor/rootfs/bench-in';
  await agent.mountOverlay({ lowerDirs: [rootImage], target: root });
  await agent.createContainer({ containerId: 'bench-in', ociSpecJson: busyboxSpec(root, ['sh', '-c', 'cat > /dev/null']), stdin: true });
  await agent.startContainer('bench-in');
  const chunk = Buffer.alloc(64 << 10, 0x5a);
  const total = mib * 16;
  let sent = 0;
  const t = process.hrtime.bigint();
  const worker = async () => {
    while (sent < total) {
      sent++;
      await agent.writeStdin({ containerId: 'bench-in' }, chunk);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  await agent.closeStdin({ containerId: 'bench-in' });
  await agent.waitProcess({ containerId: 'bench-in' });
  await agent.deleteContainer({ containerId: 'bench-in' });
  await agent.unmount({ path: root, removeDir: true });
  return (total * chunk.length) / 1e6 / seconds;
}

/** A busybox disk hot-plugged and mounted in the guest, for the stream measurements. */
export interface ChannelBench {
  /** MB/s of container stdout (dd, 64 KiB writes) reaching the host as agent events, first to last byte. */
  output(mib: number): Promise<number>;
  stdin(mib: number): Promise<number>;
  dispose(): Promise<void>;
}

export async function prepareChannelBench(guest: BootedGuest): Promise<ChannelBench> {
  const disk = busyboxRootfsDisk();
  const image = '/run/podvisor/images/bench-busybox';
  try {
    const plugged = await guest.vm.hotplugDisk({ id: 'bench-busybox', path: disk.path, readOnly: true });
    await guest.agent.mountDisk({ serial: plugged.serial, mountPoint: image });
  } catch (e) {
    disk.remove();
    throw e;
  }
  return {
    output: (mib) => outputThroughput(guest, image, mib),
    stdin: (mib) => stdinThroughput(guest, image, mib),
    async dispose() {
      try {
        await guest.agent.unmount({ path: image, removeDir: true });
        await guest.vm.unplugDisk('bench-busybox');
      } finally {
        disk.remove();
      }
    },
  };
}

/** Measures the channel on a booted guest; hot-plugs a busybox disk for the stream tests. */
export async function measureChannel(guest: BootedGuest, opts: { calls: number; mib: number }): Promise<ChannelFigures> {
  const bench = await prepareChannelBench(guest);
  try {
    const rtt = await roundTrips(guest.agent, opts.calls);
    const outputMBps = await bench.output(opts.mib);
    const stdinMBps = await bench.stdin(Math.max(1, opts.mib / 4));
    return { rttMs: { median: median(rtt), p90: percentile(rtt, 90), min: Math.min(...rtt) }, outputMBps, stdinMBps };
  } finally {
    await bench.dispose();
  }
}

export function printChannel(f: ChannelFigures): void {
  console.log(`channel round trip (Health): median ${f.rttMs.median.toFixed(2)} ms, p90 ${f.rttMs.p90.toFixed(2)} ms, min ${f.rttMs.min.toFixed(2)} ms`);
  console.log(`stream throughput guest->host (container stdout events): ${f.outputMBps.toFixed(1)} MB/s`);
  console.log(`stream throughput host->guest (WriteStdin, 64 KiB calls): ${f.stdinMBps.toFixed(1)} MB/s`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { calls: { type: 'string', default: '300' }, mib: { type: 'string', default: '32' } } });
  const guest = await bootGuest();
  try {
    printChannel(await measureChannel(guest, { calls: Number(values.calls), mib: Number(values.mib) }));
  } finally {
    await guest.stop();
  }
}
