// Pod networking, measured through the real CRI socket with the real CNI plugins
// (bridge + host-local + portmap + loopback) on a bridge this run makes:
//  - host-to-pod TCP round trip and throughput (host -> bridge -> veth -> tc redirect -> tap -> VM)
//    vs the same between two plain network namespaces on the same bridge (same CNI attachment,
//    no tap and no VM), as ratios;
//  - how much pod networking adds to RunPodSandbox (conflist present vs absent, alternating).
//
//   node --import tsx bench/pod-network.ts [rounds=3]
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { unary } from '../test/helpers/daemon.js';
import { containerConfig, sandboxConfig, waitFor } from '../test/helpers/cri.js';
import { startPodTestEnv } from '../test/helpers/pod-env.js';
import { createCniWorld, networksFor } from '../test/network/cni-fixture.js';
import { qemuProcessesUsing } from '../test/helpers/vm.js';

const rounds = Number(process.argv[2] ?? 3);
const RTT_COUNT = 200;
const SEND_BYTES = 16 * 1024 * 1024;
const ECHO_PORT = 9000;
const SINK_PORT = 9001;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const probe = (netns: string | undefined, ...args: string[]) => {
  const cmd = [process.execPath, '--import', 'tsx', 'bench/net-probe.ts', ...args];
  const out = netns ? execFileSync('nsenter', [`--net=${netns}`, ...cmd], { encoding: 'utf8' }) : execFileSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').at(-1)!) as { medianMs?: number; p90Ms?: number; mbPerS?: number };
};
/**
 * busybox nc: the same echo and sink servers in the pod and in the plain namespace. The sink speaks
 * net-probe's length-prefixed upload: a line with the byte count, the bytes (read by dd in whole
 * 64 KiB blocks), then "ok" back and the connection closes.
 */
const ECHO = `nc -ll -p ${ECHO_PORT} -e cat`;
const SINK = `nc -ll -p ${SINK_PORT} -e sh -c 'read n; dd bs=65536 count=$((n / 65536)) iflag=fullblock of=/dev/null 2>/dev/null; echo ok'`;

const world = createCniWorld('bench');
world.writeConfig(world.conflist({ dualStack: false }));
const plain = networksFor(world, join(world.dir, 'netns'), join(world.dir, 'cache'));
const servers: ChildProcess[] = [];
let env: Awaited<ReturnType<typeof startPodTestEnv>> | undefined;
try {
  // 'info': the helper waits for the daemon's "serving" line.
  env = await startPodTestEnv({ logLevel: 'info' }, `[cni]\nconf_dir = "${world.confDir}"\nbin_dirs = ["/usr/lib/cni"]\n`);
  await env.pull(env.busybox);
  const rt = env.daemon.client.runtime;

  // RunPodSandbox with and without the network (the daemon reads the conf dir on each call).
  const withNet: number[] = [];
  const without: number[] = [];
  // The daemon's own split of each RunPodSandbox ("sandbox ready" log line): on a loaded machine the
  // whole-call difference is mostly boot noise, so the network's steps on the critical path are
  // printed too: netns + tap before QEMU, the wait for CNI ADD once the agent answered (ADD runs
  // during the boot), and the guest NIC configuration.
  type Split = { netnsMs: number; cniWaitMs: number; nicMs: number };
  const splits = { net: [] as Split[], lo: [] as Split[] };
  const splitOf = (id: string): Split => {
    const line = env!.daemon.output().split('\n').find((l) => l.includes('"sandbox ready"') && l.includes(id));
    if (!line) throw new Error(`no "sandbox ready" line for ${id} in the daemon's log`);
    const j = JSON.parse(line) as Split & { phasesMs: number };
    return { netnsMs: j.netnsMs, cniWaitMs: j.cniWaitMs - j.phasesMs, nicMs: j.nicMs };
  };
  const conf = world.conflist({ dualStack: false });
  for (let i = 0; i < rounds * 2; i++) {
    const networked = i % 2 === (Math.floor(i / 2) % 2);
    if (networked) world.writeConfig(conf);
    else rmSync(join(world.confDir, '10-podvisor-test.conflist'), { force: true });
    const cfg = sandboxConfig(`bench-${i}`, join(env.dir, 'logs', `bench-${i}`));
    const t = performance.now();
    const { pod_sandbox_id } = await unary(rt, 'RunPodSandbox', { config: cfg });
    (networked ? withNet : without).push(performance.now() - t);
    (networked ? splits.net : splits.lo).push(splitOf(pod_sandbox_id));
    await unary(rt, 'RemovePodSandbox', { pod_sandbox_id });
    console.log(`RunPodSandbox ${networked ? 'with CNI network' : 'loopback only  '}: ${((performance.now() - t) / 1000).toFixed(2)} s incl. remove; run ${((networked ? withNet : without).at(-1)! / 1000).toFixed(2)} s`);
  }
  world.writeConfig(conf);

  // The pod: echo and sink servers in a busybox container.
  const cfg = sandboxConfig('bench-net', join(env.dir, 'logs', 'bench-net'));
  const { pod_sandbox_id } = await unary(rt, 'RunPodSandbox', { config: cfg });
  const podIp = (await unary(rt, 'PodSandboxStatus', { pod_sandbox_id })).status!.network!.ip;
  const podContainers: string[] = [];
  for (const [name, cmd] of [['echo', ECHO], ['sink', SINK]] as const) {
    const { container_id } = await unary(rt, 'CreateContainer', { pod_sandbox_id, sandbox_config: cfg, config: containerConfig(name, env.busybox, ['sh', '-c', cmd]) });
    await unary(rt, 'StartContainer', { container_id });
    podContainers.push(container_id);
  }
  // The baseline: two plain namespaces with the same CNI attachment, minus the tap and its redirects.
  const ids = [`benchsrv${process.pid}`, `benchcli${process.pid}`];
  const [srv, cli] = await Promise.all(ids.map((id) => plain.setup({ sandboxId: id, name: id, namespace: 'bench', uid: id, portMappings: [], annotations: {} })));
  for (const ns of [srv!.netns, cli!.netns]) {
    execFileSync('nsenter', [`--net=${ns}`, 'ip', 'link', 'del', 'tap0_pv']);
    execFileSync('nsenter', [`--net=${ns}`, 'tc', 'qdisc', 'del', 'dev', 'eth0', 'ingress']);
  }
  const srvIp = srv!.attachment.addresses[0]!.ip;
  for (const cmd of [ECHO, SINK]) servers.push(spawn('nsenter', [`--net=${srv!.netns}`, 'busybox', 'sh', '-c', cmd], { stdio: 'ignore', detached: true }));
  await waitFor('the pod echo server', async () => { try { return probe(undefined, 'rtt', podIp, String(ECHO_PORT), '1'); } catch { return undefined; } }, 60_000);

  const r = { podRtt: [] as number[], nsRtt: [] as number[], podTp: [] as number[], nsTp: [] as number[] };
  for (let i = 0; i < rounds; i++) {
    r.podRtt.push(probe(undefined, 'rtt', podIp, String(ECHO_PORT), String(RTT_COUNT)).medianMs!);
    r.nsRtt.push(probe(cli!.netns, 'rtt', srvIp, String(ECHO_PORT), String(RTT_COUNT)).medianMs!);
    r.podTp.push(probe(undefined, 'send', podIp, String(SINK_PORT), String(SEND_BYTES)).mbPerS!);
    r.nsTp.push(probe(cli!.netns, 'send', srvIp, String(SINK_PORT), String(SEND_BYTES)).mbPerS!);
    console.log(`round ${i + 1}/${rounds}: rtt pod ${r.podRtt[i]!.toFixed(3)} ms vs netns ${r.nsRtt[i]!.toFixed(3)} ms; throughput pod ${r.podTp[i]!.toFixed(1)} MB/s vs netns ${r.nsTp[i]!.toFixed(1)} MB/s`);
  }
  // Where the pod path's time goes: one more upload, with the guest kernel's CPU accounting (its
  // /proc/stat, read through the pod) and QEMU's host CPU time around it, and the virtio-net
  // features the guest negotiated (offloads pass through the tap's vnet_hdr when they are on).
  const podExec = async (cmd: string) => Buffer.from((await unary(rt, 'ExecSync', { container_id: podContainers[0]!, cmd: ['sh', '-c', cmd], timeout: 60 })).stdout).toString('utf8');
  const guestCpu = async () => (await podExec('head -1 /proc/stat')).trim().split(/\s+/).slice(1).map(Number);
  const qemuPid = qemuProcessesUsing(pod_sandbox_id)[0];
  const qemuTicks = () => {
    if (!qemuPid) return NaN;
    const f = readFileSync(`/proc/${qemuPid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(f[11]) + Number(f[12]); // utime + stime, in USER_HZ (100/s)
  };
  // QEMU's CPU while the pod idles, over a window as long as the probe's (its start-up included), is
  // taken off the upload's: what is left is the upload's own cost.
  const idleStart = [qemuTicks(), performance.now()] as const;
  probe(undefined, 'rtt', podIp, String(ECHO_PORT), '1');
  const idleRate = (qemuTicks() - idleStart[0]) / ((performance.now() - idleStart[1]) / 1000);
  const g0 = await guestCpu();
  const q0 = qemuTicks();
  const t0 = performance.now();
  const breakdownMbPerS = probe(undefined, 'send', podIp, String(SINK_PORT), String(SEND_BYTES)).mbPerS!;
  const wallS = (performance.now() - t0) / 1000;
  const q1 = qemuTicks();
  const g1 = await guestCpu();
  const uploadS = SEND_BYTES / 1e6 / breakdownMbPerS;
  const uploadTicks = Math.max(0, q1 - q0 - idleRate * wallS);
  // /proc/stat's cpu line: user nice system idle iowait irq softirq steal …
  const d = g1.map((v, i) => v - g0[i]!);
  const total = d.slice(0, 8).reduce((a, b) => a + b, 0);
  const pct = (x: number) => `${((100 * x) / total).toFixed(0)} %`;
  const features = (await podExec('cat /sys/class/net/eth0/device/features 2>/dev/null || true')).trim();
  const bit = (n: number) => (features ? (features[n] === '1' ? 'on' : 'off') : '?');
  const mtu = (await podExec('cat /sys/class/net/eth0/mtu 2>/dev/null || true')).trim() || '?';

  const [pr, nr, pt, nt] = [median(r.podRtt), median(r.nsRtt), median(r.podTp), median(r.nsTp)];
  console.log(`\npod network (${rounds} rounds, medians; TCG unless /dev/kvm is usable)`);
  console.log(`  TCP round trip   host->pod ${pr.toFixed(3)} ms   netns->netns ${nr.toFixed(3)} ms   (ratio ${(pr / nr).toFixed(1)})`);
  console.log(`  TCP throughput   host->pod ${pt.toFixed(1)} MB/s   netns->netns ${nt.toFixed(1)} MB/s   (ratio ${(pt / nt).toFixed(3)})`);
  console.log(`  where an upload's time goes (one more ${SEND_BYTES >> 20} MiB upload, ${breakdownMbPerS.toFixed(1)} MB/s, host load ${loadavg()[0]!.toFixed(1)}):`);
  console.log(`    guest vCPU busy ${pct(total - d[3]! - d[4]!)} (softirq ${pct(d[6]!)}, system ${pct(d[2]!)}, user ${pct(d[0]! + d[1]!)}, irq ${pct(d[5]!)})`);
  // CPU time per MB does not depend on how much of the machine QEMU got: it gives the ceiling one dedicated core would reach.
  const qemuSPerMb = uploadTicks / 100 / (SEND_BYTES / 1e6);
  console.log(`    QEMU used ${(uploadTicks / 100 / uploadS).toFixed(2)} host cores over the upload's ${uploadS.toFixed(1)} s (idle: ${(idleRate / 100).toFixed(2)}): ${(qemuSPerMb * 1000).toFixed(0)} ms of QEMU CPU per MB, so about ${(1 / qemuSPerMb).toFixed(0)} MB/s with one core to itself`);
  console.log(`    guest eth0 MTU ${mtu}; virtio-net offloads negotiated: csum ${bit(0)}, guest_csum ${bit(1)}, guest_tso4 ${bit(7)}, host_tso4 ${bit(11)}, mrg_rxbuf ${bit(15)}`);
  console.log(`  RunPodSandbox    with network ${(median(withNet) / 1000).toFixed(2)} s   loopback only ${(median(without) / 1000).toFixed(2)} s   (difference ${((median(withNet) - median(without)) / 1000).toFixed(2)} s, boot noise included)`);
  const ms = (xs: Split[], k: keyof Split) => median(xs.map((x) => x[k]));
  const critical = ms(splits.net, 'netnsMs') + ms(splits.net, 'cniWaitMs') + ms(splits.net, 'nicMs');
  console.log(`    network steps on its critical path (medians): netns+tap ${ms(splits.net, 'netnsMs')} ms, wait for CNI ADD ${ms(splits.net, 'cniWaitMs')} ms, guest NIC ${ms(splits.net, 'nicMs')} ms: networking adds ${(critical / 1000).toFixed(2)} s`);
} finally {
  for (const s of servers) if (s.pid) try { process.kill(-s.pid, 'SIGKILL'); } catch { /* gone */ }
  await world.cleanup([plain, ...(env ? [networksFor(world, join(env.dir, 'state', 'netns'), join(env.dir, 'root', 'cni'))] : [])]);
  await env?.dispose();
}
