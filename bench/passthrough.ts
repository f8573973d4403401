// What routing through podvisord costs a pass-through pod: the same CRI calls made straight to
// containerd and through podvisord's socket (which forwards them), alternating round by round in
// the same run, with the ratio of the medians. Real containerd 1.6 + runc, hostNetwork pods.
//
//   node --import tsx bench/passthrough.ts [rounds=5] [calls=200]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CriClient } from '../src/cri/client.js';
import { startDaemon, unary } from '../test/helpers/daemon.js';
import { pushTestImages, startRegistry } from '../test/helpers/registry.js';
import { startContainerd } from '../test/helpers/containerd.js';
import { hostNamespaces, removeAllPods, runPod } from '../test/passthrough/pods.js';

const rounds = Number(process.argv[2] ?? 5);
const calls = Number(process.argv[3] ?? 200);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const registry = await startRegistry();
const logRoot = mkdtempSync(join(tmpdir(), 'pvptb-'));
let containerd: Awaited<ReturnType<typeof startContainerd>> | undefined;
let daemon: Awaited<ReturnType<typeof startDaemon>> | undefined;
try {
  await pushTestImages(registry);
  const image = `${registry.host}/podvisor-test/busybox:latest`;
  containerd = await startContainerd({ registryHost: registry.host, pauseImage: `${registry.host}/podvisor-test/pause:latest` });
  daemon = await startDaemon({
    logLevel: 'info',
    startTimeoutMs: 180_000,
    config: `[registry]\ninsecure = ["${registry.host}"]\n[passthrough]\nendpoint = "${containerd.endpoint}"\nhost_namespaces = true\n`,
  });
  const ctd = containerd.client;
  const pv = daemon.client;
  const opts = { logRoot, cgroupParent: containerd.cgroupParent, image };
  // One pod started each way first, so the image and pause image are in containerd's store for both.
  const { containerId } = await runPod(pv, 'warm', hostNamespaces('NODE'), opts);

  const status = async (c: CriClient) => {
    const t = process.hrtime.bigint();
    await unary(c.runtime, 'ContainerStatus', { container_id: containerId });
    return Number(process.hrtime.bigint() - t) / 1e6;
  };
  // podvisord's own answer, nothing forwarded: what any call through its socket costs here.
  const version = async (c: CriClient) => {
    const t = process.hrtime.bigint();
    await unary(c.runtime, 'Version', {});
    return Number(process.hrtime.bigint() - t) / 1e6;
  };
  const list = async (c: CriClient) => {
    const t = process.hrtime.bigint();
    await unary(c.runtime, 'ListContainers', {});
    return Number(process.hrtime.bigint() - t) / 1e6;
  };
  const podStart = async (c: CriClient, name: string) => {
    const t = performance.now();
    const { sandboxId } = await runPod(c, name, hostNamespaces('NODE'), opts);
    const ms = performance.now() - t;
    await unary(c.runtime, 'StopPodSandbox', { pod_sandbox_id: sandboxId });
    await unary(c.runtime, 'RemovePodSandbox', { pod_sandbox_id: sandboxId });
    return ms;
  };

  const fig = { version: { direct: [] as number[], via: [] as number[] }, status: { direct: [] as number[], via: [] as number[] }, list: { direct: [] as number[], via: [] as number[] }, pod: { direct: [] as number[], via: [] as number[] } };
  for (let r = 0; r < rounds; r++) {
    // Alternate who goes first so load from elsewhere on the machine hits both alike.
    const order: [CriClient, 'direct' | 'via'][] = r % 2 === 0 ? [[ctd, 'direct'], [pv, 'via']] : [[pv, 'via'], [ctd, 'direct']];
    for (const [c, k] of order) {
      const s: number[] = [];
      const l: number[] = [];
      const v: number[] = [];
      for (let i = 0; i < calls; i++) v.push(await version(c));
      for (let i = 0; i < calls; i++) s.push(await status(c));
      for (let i = 0; i < calls; i++) l.push(await list(c));
      fig.version[k].push(median(v));
      fig.status[k].push(median(s));
      fig.list[k].push(median(l));
      fig.pod[k].push(await podStart(c, `bench-${k}-${r}`));
    }
  }
  const line = (what: string, f: { direct: number[]; via: number[] }, unit = 'ms') => {
    const d = median(f.direct);
    const v = median(f.via);
    console.log(`${what.padEnd(46)} direct ${d.toFixed(2)} ${unit}   via podvisord ${v.toFixed(2)} ${unit}   ratio ${(v / d).toFixed(2)}   (+${(v - d).toFixed(2)} ${unit})`);
  };
  console.log(`pass-through overhead, ${rounds} rounds (medians of per-round medians of ${calls} calls), load ${(await import('node:os')).loadavg()[0]!.toFixed(1)}`);
  line('Version (containerd\'s vs podvisord\'s own)', fig.version);
  line('ContainerStatus', fig.status);
  line('ListContainers (joined with podvisor\'s own)', fig.list);
  line('RunPodSandbox+Create+Start (hostNetwork, runc)', fig.pod);
} finally {
  await removeAllPods(daemon?.client);
  await daemon?.dispose();
  await containerd?.stop();
  await registry.stop();
  rmSync(logRoot, { recursive: true, force: true });
}
