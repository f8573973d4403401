// Volumes through the real CRI socket, one sandbox VM per share mode (virtiofs, then copy; one
// daemon and one VM at a time):
//  - CreateContainer with 0 mounts vs with 6 (kubelet's usual set: token, configMap, secret,
//    emptyDir, etc-hosts, termination log), the ratio being the cost of the share's work;
//  - cold read throughput of the same 32 MiB (16 files of 2 MiB, within copy mode's per-file
//    bound) from a hostPath volume vs from the image's own erofs disk (the baseline);
//  - the time from kubelet's atomic configMap update on the host until a container sees it (the
//    guest polls every 20 ms and prints; the host time of that line in the CRI log is the
//    arrival), against the same loop seeing a change made inside the guest (the output path alone).
//
//   node --import tsx bench/volumes.ts [rounds=3] [modes=virtiofs,copy]
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { sha256Digest } from '../src/image/digest.js';
import { unary } from '../test/helpers/daemon.js';
import { containerConfig, readCriLog, sandboxConfig, waitContainerState, waitFor } from '../test/helpers/cri.js';
import { KubeletPod, writeAtomicVolume } from '../test/helpers/kubelet-volumes.js';
import { startPodTestEnv } from '../test/helpers/pod-env.js';
import { pushImage } from '../test/helpers/registry.js';
import { tarOf } from '../test/helpers/tar.js';
import type { ShareMode } from '../src/volume/share-mode.js';

const rounds = Number(process.argv[2] ?? 3);
const modes = (process.argv[3] ?? 'virtiofs,copy').split(',') as ShareMode[];
const PARTS = 16;
const PART = 2 << 20;
const BIG = PARTS * PART;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const ms = (v: number) => `${Math.round(v)} ms`;

interface Figures { zero: number; six: number; img: number; vol: number; update: number; updateMax: number; local: number }
const results = new Map<ShareMode, Figures>();

const mbps = (t: number) => `${((BIG / (1 << 20)) / (t / 1000)).toFixed(0)} MiB/s`;
for (const mode of modes) {
  results.set(mode, await runMode(mode));
  report(); // after each mode, so a run cut short still prints what it measured
}

function report(): void {
console.log(`\nvolumes (${rounds} rounds, medians; TCG unless /dev/kvm is usable)`);
for (const [mode, f] of results) {
  console.log(`share mode ${mode}`);
  console.log(`  CreateContainer, 0 mounts       ${ms(f.zero)}`);
  console.log(`  CreateContainer, 6 mounts       ${ms(f.six)}  (${(f.six / f.zero).toFixed(2)}x)`);
  console.log(`  cold read 32 MiB, image disk    ${ms(f.img)}  ${mbps(f.img)}`);
  console.log(`  cold read 32 MiB, volume        ${ms(f.vol)}  ${mbps(f.vol)}  (${(f.vol / f.img).toFixed(2)}x the image disk's time)`);
  console.log(`  configMap update -> guest        ${ms(f.update)}  (max ${ms(f.updateMax)}; guest-local change through the same loop: ${ms(f.local)})`);
}
}

async function runMode(mode: ShareMode): Promise<Figures> {
const env = await startPodTestEnv({ logLevel: 'info', startTimeoutMs: 180_000 }, `\n[volumes]\nshare_mode = "${mode}"\n`);
try {
  console.log(`share mode ${mode}`);
  const rt = env.daemon.client.runtime;
  await env.pull(env.busybox);
  // Text, because the tar helper takes string bodies; hex of random bytes does not compress much.
  const parts = Array.from({ length: PARTS }, () => randomBytes(PART / 2).toString('hex'));
  const tar = await tarOf([{ name: 'big/', type: 'directory', mode: 0o755 }, ...parts.map((body, i) => ({ name: `big/part${i}`, body, mode: 0o644 }))]);
  await pushImage(env.registry, 'bench/big', 'v1', [{ data: gzipSync(tar, { level: 1 }), diffId: sha256Digest(tar), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }]);
  const bigImage = `${env.registry.host}/bench/big:v1`;
  await env.pull(bigImage);

  const kubelet = new KubeletPod(join(env.dir, 'kubelet'), 'uid-bench');
  const cfgDir = kubelet.volume('configmap', 'cfg');
  writeAtomicVolume(cfgDir, { value: { data: 'v0' } });
  writeAtomicVolume(kubelet.volume('secret', 'sec'), { password: { data: 'x', mode: 0o400 } });
  writeAtomicVolume(kubelet.volume('projected', 'token'), { token: { data: 't' }, namespace: { data: 'bench' } });
  const hostBig = join(env.dir, 'host');
  mkdirSync(hostBig);
  parts.forEach((body, i) => writeFileSync(join(hostBig, `part${i}`), body));
  const six = (name: string) => [
    { container_path: '/var/run/secrets/kubernetes.io/serviceaccount', host_path: kubelet.volume('projected', 'token'), readonly: true },
    { container_path: '/etc/config', host_path: cfgDir, readonly: true },
    { container_path: '/etc/secret', host_path: kubelet.volume('secret', 'sec'), readonly: true },
    { container_path: '/scratch', host_path: kubelet.emptyDir('scratch') },
    { container_path: '/etc/hosts', host_path: kubelet.etcHosts('127.0.0.1\tlocalhost\n') },
    { container_path: '/dev/termination-log', host_path: kubelet.terminationLog(name, '0') },
  ];

  const sc = sandboxConfig('bench-volumes', join(env.dir, 'logs'));
  const { pod_sandbox_id } = await unary(rt, 'RunPodSandbox', { config: sc });
  const create = async (name: string, extra: Record<string, unknown>, command = ['sleep', '3600']) => {
    const t = performance.now();
    const { container_id } = await unary(rt, 'CreateContainer', { pod_sandbox_id, sandbox_config: sc, config: containerConfig(name, env.busybox, command, extra) });
    return { id: container_id, ms: performance.now() - t };
  };
  // Warm-up: the image disk is plugged by the first container of the pod.
  await unary(rt, 'RemoveContainer', { container_id: (await create('warm', {})).id });

  const zero: number[] = [];
  const withSix: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const a = await create(`zero-${i}`, {});
    const b = await create(`six-${i}`, { mounts: six(`six-${i}`) });
    zero.push(a.ms);
    withSix.push(b.ms);
    for (const c of [a, b]) await unary(rt, 'RemoveContainer', { container_id: c.id });
    console.log(`round ${i + 1}/${rounds}: CreateContainer 0 mounts ${ms(a.ms)}, 6 mounts ${ms(b.ms)}`);
  }

  // Read throughput: a privileged container drops the guest page cache before each read.
  const reader = await create('reader', {
    mounts: [{ container_path: '/vol', host_path: hostBig, readonly: true }, { container_path: '/img', image: { image: bigImage }, readonly: true }],
    linux: { security_context: { privileged: true } },
  });
  await unary(rt, 'StartContainer', { container_id: reader.id });
  await waitContainerState(env.daemon.client, reader.id, 'CONTAINER_RUNNING');
  const readMs = async (path: string) => {
    const r = await unary(rt, 'ExecSync', {
      container_id: reader.id, timeout: 300,
      // busybox date has no %N: /proc/uptime's centiseconds (a 32 MiB read under TCG takes far longer).
      cmd: ['sh', '-c', `sync; echo 3 > /proc/sys/vm/drop_caches; a=$(cut -d' ' -f1 /proc/uptime); cat ${path}/part* > /dev/null; b=$(cut -d' ' -f1 /proc/uptime); echo "$a $b"`],
    });
    const [a, b] = Buffer.from(r.stdout).toString().trim().split(' ').map(Number);
    if (!Number.isFinite(a) || !Number.isFinite(b)) throw new Error(`read timing: unexpected output ${JSON.stringify(Buffer.from(r.stdout).toString())}`);
    return (b! - a!) * 1000;
  };
  const vol: number[] = [];
  const img: number[] = [];
  for (let i = 0; i < rounds; i++) {
    img.push(await readMs('/img/big'));
    vol.push(await readMs('/vol'));
  }
  // Update to guest.
  const watcher = await create('watcher', { mounts: [{ container_path: '/etc/config', host_path: cfgDir, readonly: true }] }, ['sh', '-c',
    'last=; while true; do v=$( (cat /etc/config/value; echo; cat /tmp/local) 2>/dev/null | tr "\\n" " "); [ "$v" != "$last" ] && echo "$v" && last=$v; sleep 0.02; done']);
  await unary(rt, 'StartContainer', { container_id: watcher.id });
  const logPath = join(env.dir, 'logs', 'watcher.log');
  // A line is the config value, then the guest-local value when there is one ("v3" or "v3 l2");
  // the value has no trailing newline, hence the echo between the two files.
  const arrival = async (marker: string) => {
    const line = await waitFor(`"${marker}" in the watcher log`, async () => (await readCriLog(logPath)).find((l) => l.text.trim().split(' ').includes(marker)), 120_000);
    return Date.parse(line.time);
  };
  await arrival('v0');
  const update: number[] = [];
  const local: number[] = [];
  for (let i = 1; i <= rounds * 2; i++) {
    let t0 = Date.now();
    writeAtomicVolume(cfgDir, { value: { data: `v${i}` } });
    update.push((await arrival(`v${i}`)) - t0);
    t0 = Date.now();
    // The baseline: the same loop sees a file the guest itself changed (exec latency subtracted below).
    const e0 = performance.now();
    await unary(rt, 'ExecSync', { container_id: watcher.id, cmd: ['sh', '-c', `echo l${i} > /tmp/local`], timeout: 30 });
    const execMs = performance.now() - e0;
    local.push(Math.max(0, (await arrival(`l${i}`)) - t0 - execMs));
  }

  const figures = { zero: median(zero), six: median(withSix), img: median(img), vol: median(vol), update: median(update), updateMax: Math.max(...update), local: median(local) };
  await unary(rt, 'RemovePodSandbox', { pod_sandbox_id });
  return figures;
} finally {
  await env.dispose();
}
}
