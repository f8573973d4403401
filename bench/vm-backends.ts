// The two VM backends side by side in one run (issue 19): RunPodSandbox through the real CRI
// socket and the idle QEMU's PSS, for podvisor's own QEMU launcher (handler "") and for the
// libvirt backend (handler "libvirt", against a libvirtd this bench starts on private
// sockets). Rounds alternate which backend goes first, one VM at a time, so load from
// elsewhere on the machine hits both alike. libvirtd's own PSS is printed once: a per-node
// cost of the libvirt backend, not a per-pod one. With --cni every pod is on a real CNI bridge
// (bridge + host-local + portmap on a bridge and subnet of the bench's own): the QEMU backend
// starts QEMU in the pod netns, the libvirt backend moves its host-side tap in (host-tap.ts).
//
//   node --import tsx bench/vm-backends.ts [--cni] [rounds=2] [idle-seconds=20]
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { vmProcessUsage } from '../src/vm/process-usage.js';
import { unary } from '../test/helpers/daemon.js';
import { libvirtUnavailable, startPrivateLibvirtd } from '../test/helpers/libvirtd.js';
import { startPodTestEnv } from '../test/helpers/pod-env.js';
import { sandboxConfig } from '../test/helpers/cri.js';
import { createCniWorld, networksFor } from '../test/network/cni-fixture.js';
import { HostTapMove, newHostTapName } from '../src/network/host-tap.js';
import { createNetns, removeNetns } from '../src/network/netns.js';
import { createTap, TAP_NAME } from '../src/network/tap-redirect.js';

const cni = process.argv.includes('--cni');
const positional = process.argv.slice(2).filter((a) => a !== '--cni');
const rounds = Number(positional[0] ?? 2);
const idleSeconds = Number(positional[1] ?? 20);
const MiB = 1024 * 1024;

const unavailable = await libvirtUnavailable();
if (unavailable) {
  console.log(`vm-backends: cannot compare: ${unavailable}`);
  process.exit(1);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const world = cni ? createCniWorld('vmb') : undefined;
world?.writeConfig(world.conflist({ dualStack: false }));
const libvirtd = await startPrivateLibvirtd();
const env = await startPodTestEnv({ vmBackend: 'qemu', logLevel: 'info', startTimeoutMs: 300_000 },
  `[daemon]\nboot_timeout_seconds = 900\n[runtimes.libvirt]\nbackend = "libvirt"\n[libvirt]\nuri = "${libvirtd.uri}"\n` +
  (world ? `[cni]\nconf_dir = "${world.confDir}"\nbin_dirs = ["/usr/lib/cni"]\n` : ''));
const backends = { qemu: '', libvirt: 'libvirt' } as const;
type Name = keyof typeof backends;
const runp: Record<Name, number[]> = { qemu: [], libvirt: [] };
const pss: Record<Name, number[]> = { qemu: [], libvirt: [] };
/** QEMU's own CPU seconds from its start to RunPodSandbox's answer: the same work, or less CPU handed to it? */
const bootCpu: Record<Name, number[]> = { qemu: [], libvirt: [] };
try {
  const rt = env.daemon.client.runtime;
  for (let i = 0; i < rounds; i++) {
    const order: Name[] = i % 2 === 0 ? ['qemu', 'libvirt'] : ['libvirt', 'qemu'];
    for (const name of order) {
      const cfg = sandboxConfig(`bench-${name}-${i}`, join(env.dir, 'logs', `bench-${name}-${i}`));
      const t = performance.now();
      const { pod_sandbox_id } = await unary(rt, 'RunPodSandbox', { config: cfg, runtime_handler: backends[name] });
      runp[name].push(performance.now() - t);
      const status = await unary(rt, 'PodSandboxStatus', { pod_sandbox_id, verbose: true });
      if (world && !status.status?.network?.ip) throw new Error(`the ${name} pod got no CNI address`);
      const info = JSON.parse(status.info.info!);
      const atReady = vmProcessUsage(info.vm.pid);
      if (atReady) bootCpu[name].push(atReady.cpuSeconds);
      await sleep(idleSeconds * 1000);
      const usage = vmProcessUsage(info.vm.pid);
      if (!usage) throw new Error(`the ${name} pod's QEMU (pid ${info.vm.pid}) is gone`);
      pss[name].push(usage.pssBytes);
      await unary(rt, 'RemovePodSandbox', { pod_sandbox_id });
      console.log(`round ${i + 1}/${rounds} ${name.padEnd(7)}: RunPodSandbox ${(runp[name].at(-1)! / 1000).toFixed(2)} s ` +
        `(QEMU CPU ${bootCpu[name].at(-1)?.toFixed(1) ?? '?'} s), idle PSS ${(usage.pssBytes / MiB).toFixed(1)} MiB` +
        (world ? `, pod IP ${status.status!.network!.ip}` : ''));
    }
  }
  const daemonUsage = libvirtd.pid() ? vmProcessUsage(libvirtd.pid()!) : undefined;
  console.log(`\nVM backends (${rounds} rounds, medians; ${world ? 'pods on a CNI bridge' : 'loopback-only pods'}; idle = ${idleSeconds} s after RunPodSandbox; TCG unless /dev/kvm is usable)`);
  console.log('  backend   RunPodSandbox   QEMU CPU in it   idle QEMU PSS');
  for (const name of ['qemu', 'libvirt'] as const) {
    console.log(`  ${name.padEnd(8)}  ${(median(runp[name]) / 1000).toFixed(2).padStart(9)} s   ${median(bootCpu[name]).toFixed(1).padStart(10)} s   ${(median(pss[name]) / MiB).toFixed(1).padStart(9)} MiB`);
  }
  console.log(`  libvirt / qemu: RunPodSandbox ${(median(runp.libvirt) / median(runp.qemu)).toFixed(2)}x, idle PSS ${(median(pss.libvirt) / median(pss.qemu)).toFixed(2)}x`);
  if (daemonUsage) console.log(`  libvirtd itself (once per node): PSS ${(daemonUsage.pssBytes / MiB).toFixed(1)} MiB`);
  if (world) await tapSetupCost(world.dir);
} finally {
  // The network first, while the daemon's folders (attachment records, netns files) are still there.
  await world?.cleanup([networksFor(world, join(env.dir, 'state', 'netns'), join(env.dir, 'root', 'cni'))]);
  await env.dispose();
  await libvirtd.stop();
}

/**
 * The part of the pod network that differs between the backends, without a VM (so without the
 * boot's noise): the QEMU backend's tap made inside the pod netns, against the libvirt
 * backend's host-netns tap moved into it (host-tap.ts); rounds alternate, medians of 10.
 */
async function tapSetupCost(dir: string): Promise<void> {
  const ms: Record<'inNetns' | 'moved', number[]> = { inNetns: [], moved: [] };
  for (let i = 0; i < 10; i++) {
    for (const kind of i % 2 ? (['moved', 'inNetns'] as const) : (['inNetns', 'moved'] as const)) {
      const ns = join(dir, `tapbench-${kind}`);
      await createNetns(ns);
      try {
        const t = performance.now();
        if (kind === 'inNetns') {
          await createTap(ns);
        } else {
          const move = new HostTapMove(newHostTapName(), ns, TAP_NAME);
          await move.create(ns);
          await move.moveIn();
        }
        ms[kind].push(performance.now() - t);
      } finally {
        await removeNetns(ns);
      }
    }
  }
  console.log(`  pod tap set-up, no VM (median of 10): in the pod netns (qemu) ${median(ms.inNetns).toFixed(1)} ms, ` +
    `host netns + move (libvirt) ${median(ms.moved).toFixed(1)} ms`);
}
