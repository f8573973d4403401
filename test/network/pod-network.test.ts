import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, get, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { unary } from '../helpers/daemon.js';
import { containerConfig, rejectsWith, sandboxConfig, waitFor } from '../helpers/cri.js';
import { startPodTestEnv, testVmBackend, type PodTestEnv } from '../helpers/pod-env.js';
import { qemuProcessesUsing } from '../helpers/vm.js';
import { createCniWorld, networksFor, type CniWorld } from './cni-fixture.js';

/**
 * Pod networking end to end: real podvisord over its socket, real VMs, the
 * real bridge + host-local + portmap + loopback plugins on a bridge and
 * private subnets this test made. Traffic only ever goes to addresses on
 * that bridge (and 127.0.0.1 for the hostPort).
 */

/** An HTTP GET; the default bound is for a server in a TCG guest on a loaded host, where 5 s was not always enough. */
function httpGet(url: string, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

describe('pod networking through the CRI', () => {
  let world: CniWorld;
  let env: PodTestEnv;
  let gatewayServer: Server | undefined;
  const rt = () => env.daemon.client.runtime;
  const hostPort = 20000 + (process.pid % 10000);
  const pods: Record<string, { id: string; cfg: ReturnType<typeof sandboxConfig>; ips: string[] }> = {};

  const exec = async (containerId: string, cmd: string) => {
    const r = await unary(rt(), 'ExecSync', { container_id: containerId, cmd: ['sh', '-c', cmd], timeout: 30 });
    return { code: r.exit_code, out: Buffer.from(r.stdout).toString('utf8'), err: Buffer.from(r.stderr).toString('utf8') };
  };
  /** HTTP GET from inside a pod with busybox nc (busybox-static's wget crashes in images without NSS files). */
  const podGet = async (containerId: string, host: string, port: number) => {
    const r = await exec(containerId, `printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' | nc -w 10 ${host} ${port}`);
    assert.equal(r.code, 0, `nc ${host} ${port} from the pod: ${r.err}`);
    return r.out.slice(r.out.indexOf('\r\n\r\n') + 4);
  };
  const runPod = async (name: string, extra: Record<string, unknown> = {}) => {
    const cfg = sandboxConfig(name, join(env.dir, 'logs', name), extra);
    const id = (await unary(rt(), 'RunPodSandbox', { config: cfg })).pod_sandbox_id;
    const st = (await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: id })).status!;
    const ips = [st.network!.ip, ...st.network!.additional_ips.map((a) => a.ip)];
    pods[name] = { id, cfg, ips };
    return pods[name]!;
  };
  const startContainer = async (pod: string, name: string, cmd: string) => {
    const { id, cfg } = pods[pod]!;
    const cid = (await unary(rt(), 'CreateContainer', { pod_sandbox_id: id, sandbox_config: cfg, config: containerConfig(name, env.busybox, ['sh', '-c', cmd]) })).container_id;
    await unary(rt(), 'StartContainer', { container_id: cid });
    return cid;
  };
  const networkConditon = async () => (await unary(rt(), 'Status', {})).status!.conditions.find((c) => c.type === 'NetworkReady')!;
  /** What a pod must not leave behind once removed. */
  const assertNothingLeft = (sandboxIds: string[], what: string) => {
    assert.deepEqual(world.allocatedIps(), [], `${what}: no IPAM allocation`);
    assert.deepEqual(world.bridgePorts(), [], `${what}: no veth on the bridge`);
    for (const id of sandboxIds) assert.deepEqual(world.rulesMentioning(id), [], `${what}: no iptables rule of ${id.slice(0, 12)}`);
    assert.deepEqual(listDir(join(env.daemon.state, 'netns')), [], `${what}: no netns file`);
    // The tap lives only in the pod's namespace: with no bind mount and no QEMU holding it, it is gone too.
    assert.deepEqual(mountsUnder(join(env.daemon.state, 'netns')), [], `${what}: no netns bind mount (and so no tap)`);
    assert.deepEqual(listDir(join(env.daemon.root, 'cni')), [], `${what}: no CNI attachment record`);
    // The libvirt backend's taps start in the host netns (src/network/host-tap.ts): none may stay there.
    assert.deepEqual(hostTapsOf(env.dir), [], `${what}: no tap of this daemon in the host netns`);
  };

  before(async () => {
    world = createCniWorld('pod');
    env = await startPodTestEnv({}, [
      `[cni]\nconf_dir = "${world.confDir}"\nbin_dirs = ["/usr/lib/cni"]\n`,
      // A handler whose VM cannot start: RunPodSandbox then fails after the network is up (on
      // the libvirt backend: libvirt refuses the domain once the host tap exists).
      `[runtimes.broken]\nkernel = "/nonexistent/vmlinux"\n${testVmBackend() === 'libvirt' ? 'backend = "libvirt"\n' : ''}`,
    ].join(''));
    await env.pull(env.busybox);
  });

  after(async () => {
    gatewayServer?.close();
    if (env) {
      // Through the CRI first; then whatever a failed test left, with podvisor's own release, before the folders go.
      for (const p of Object.values(pods)) await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: p.id }).catch(() => undefined);
      await world.cleanup([networksFor(world, join(env.dir, 'state', 'netns'), join(env.dir, 'root', 'cni'))]);
      await env.dispose();
    } else {
      await world?.cleanup();
    }
  });

  test('NetworkReady is false naming the conf dir, and true once a conflist appears', async () => {
    const before = await networkConditon();
    assert.equal(before.status, false);
    assert.match(before.message, new RegExp(world.confDir));
    world.writeConfig(world.conflist({ dualStack: true }));
    assert.equal((await networkConditon()).status, true);
  });

  test('two pods on one bridge reach each other, the gateway and the host, over IPv4 and IPv6', async () => {
    const gw4 = `${world.v4Prefix}.1`;
    // One after the other: two TCG boots at once on a loaded 2-core machine can outrun the boot timeout.
    await runPod('net-a', {
      hostname: 'pod-a',
      dns_config: { servers: [`${world.v4Prefix}.53`], searches: ['pods.test'], options: ['ndots:2'] },
      port_mappings: [{ protocol: 'TCP', container_port: 8080, host_port: hostPort }],
    });
    await runPod('net-b');
    const a = pods['net-a']!;
    const b = pods['net-b']!;
    assert.match(a.ips[0]!, new RegExp(`^${world.v4Prefix.replaceAll('.', '\\.')}\\.\\d+$`), 'ip is the IPv4 address');
    assert.ok(a.ips[1]?.startsWith(`${world.v6Prefix}:`), `additional_ips has the IPv6 address: ${a.ips}`);
    assert.notEqual(a.ips[0], b.ips[0]);
    if (env.libvirtd) {
      // On the libvirt backend: libvirt runs both VMs, and each one's tap was moved from the host netns into its pod's.
      const domains = env.libvirtd.virsh('list', '--name');
      for (const p of [a, b]) assert.ok(domains.includes(`podvisor-${p.id}`), `virsh list shows podvisor-${p.id}: ${domains}`);
      assert.deepEqual(hostTapsOf(env.dir), [], 'no pod tap is left in the host netns');
      const podLinks = execFileSync('nsenter', [`--net=${join(env.daemon.state, 'netns', a.id)}`, 'ip', '-br', 'link'], { encoding: 'utf8' });
      assert.match(podLinks, /^tap0_pv\s+UP/m, `the pod netns holds the VM's tap: ${podLinks}`);
    }

    const server = await startContainer('net-a', 'server', 'mkdir -p /www && echo hello-from-a > /www/index.html && exec httpd -f -p 8080 -h /www');
    const sidecar = await startContainer('net-a', 'sidecar', 'exec sleep 1000');
    const client = await startContainer('net-b', 'client', 'exec sleep 1000');

    // host -> pod by IP (v4 and v6)
    const [v4, v6] = a.ips;
    assert.equal(await waitFor('the pod web server', () => httpGet(`http://${v4}:8080/`).catch(() => undefined), 60_000), 'hello-from-a\n');
    assert.equal(await httpGet(`http://[${v6}]:8080/`), 'hello-from-a\n');
    // pod -> pod over TCP (v4 and v6)
    assert.equal(await podGet(client, v4!, 8080), 'hello-from-a\n');
    assert.equal(await podGet(client, v6!, 8080), 'hello-from-a\n');
    // pod -> gateway (a server the test runs on the bridge's own address)
    gatewayServer = createServer((_req, res) => res.end('hello-from-gateway'));
    await new Promise<void>((r) => gatewayServer!.listen(0, gw4, r));
    const gwPort = (gatewayServer.address() as AddressInfo).port;
    assert.equal(await podGet(client, gw4, gwPort), 'hello-from-gateway');
    // hostPort via portmap
    assert.equal(await httpGet(`http://127.0.0.1:${hostPort}/`), 'hello-from-a\n');
    assert.equal(await httpGet(`http://${gw4}:${hostPort}/`), 'hello-from-a\n');

    // DNS, hostname and /etc/hosts as configured, the same in every container of the pod
    const resolv = (await exec(server, 'cat /etc/resolv.conf')).out;
    assert.match(resolv, new RegExp(`^nameserver ${world.v4Prefix}\\.53$`, 'm'));
    assert.match(resolv, /^search pods\.test$/m);
    assert.match(resolv, /^options ndots:2$/m);
    for (const c of [server, sidecar]) {
      assert.equal((await exec(c, 'hostname')).out, 'pod-a\n');
      assert.match((await exec(c, 'cat /etc/hosts')).out, new RegExp(`^${v4!.replaceAll('.', '\\.')}\\s+pod-a$`, 'm'));
    }
    assert.equal((await exec(server, 'cat /etc/hosts')).out, (await exec(sidecar, 'cat /etc/hosts')).out);
    // the guest NIC took the CNI interface's MAC and addresses
    const guestIp = (await exec(client, 'ip addr show eth0')).out;
    assert.match(guestIp, new RegExp(`inet ${b.ips[0]!.replaceAll('.', '\\.')}/24`));
    assert.match(guestIp, new RegExp(`inet6 ${b.ips[1]}/64`));
    const cniMac = JSON.parse(execFileSync('nsenter', [`--net=${join(env.daemon.state, 'netns', b.id)}`, 'ip', '-j', 'link', 'show', 'eth0'], { encoding: 'utf8' }))[0].address;
    assert.match(guestIp, new RegExp(`link/ether ${cniMac}`));
  });

  test('pods keep their network across a podvisord kill; Stop and Remove afterwards leave nothing', async () => {
    const a = pods['net-a']!;
    const b = pods['net-b']!;
    await env.killDaemon();
    await env.startDaemon();
    assert.equal(await httpGet(`http://${a.ips[0]}:8080/`), 'hello-from-a\n');
    for (const p of [a, b]) {
      await unary(rt(), 'StopPodSandbox', { pod_sandbox_id: p.id });
      await unary(rt(), 'StopPodSandbox', { pod_sandbox_id: p.id }); // idempotent
    }
    await assert.rejects(httpGet(`http://127.0.0.1:${hostPort}/`, 2_000), 'the hostPort is gone with the pod');
    for (const p of [a, b]) await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: p.id });
    assertNothingLeft([a.id, b.id], 'after Stop + Remove');
  });

  test('RunPodSandbox that fails half way leaves nothing: a plugin fails after bridge and portmap, or the VM cannot start', async () => {
    world.writeConfig(world.conflist({ extra: [{ type: 'tuning', sysctl: { 'net.ipv4.conf.eth0.no_such_knob': '1' } }] }));
    const cfg = sandboxConfig('net-fail', join(env.dir, 'logs', 'net-fail'), { port_mappings: [{ protocol: 'TCP', container_port: 80, host_port: hostPort + 1 }] });
    await rejectsWith(unary(rt(), 'RunPodSandbox', { config: cfg }), 'FAILED_PRECONDITION', /tuning/);
    assertNothingLeft([], 'after a failed CNI ADD');
    assert.deepEqual(world.rulesMentioning(`--dport ${hostPort + 1} `), []);

    world.writeConfig(world.conflist());
    await assert.rejects(unary(rt(), 'RunPodSandbox', { config: sandboxConfig('net-novm', join(env.dir, 'logs', 'novm')), runtime_handler: 'broken' }));
    assertNothingLeft([], 'after a VM that did not start');
    assert.deepEqual((await unary(rt(), 'ListPodSandbox', {})).items, []);
  });

  test('podvisord killed in the middle of RunPodSandbox: the restarted daemon removes the half-made pod and its network', async () => {
    const cfg = sandboxConfig('net-crash', join(env.dir, 'logs', 'net-crash'), { port_mappings: [{ protocol: 'TCP', container_port: 80, host_port: hostPort + 2 }] });
    const run = unary(rt(), 'RunPodSandbox', { config: cfg }).catch(() => 'cut short');
    // Kill once CNI ADD is done (its result is on disk) and the VM is starting.
    await waitFor('the CNI attachment', async () => (world.allocatedIps().length > 0 && listDir(join(env.daemon.state, 'vms')).length > 0 ? true : undefined), 120_000);
    await env.killDaemon();
    assert.equal(await run, 'cut short');
    assert.ok(world.allocatedIps().length > 0, 'the crash left an allocation behind');
    await env.startDaemon();
    assertNothingLeft([], 'after recovery');
    assert.deepEqual(world.rulesMentioning(`--dport ${hostPort + 2} `), []);
    // The half-started QEMU goes too, even when it could not be reattached.
    await waitFor('no QEMU of the half-made pod', async () => (qemuProcessesUsing(join(env.daemon.state, 'vms')).length === 0 ? true : undefined), 60_000);
  });
});

/** Host-netns links whose alias names a run directory under `dir` (host-tap.ts labels its taps so). */
function hostTapsOf(dir: string): string[] {
  const links = JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) as Array<{ ifname: string; ifalias?: string }>;
  return links.filter((l) => l.ifalias?.includes(dir)).map((l) => l.ifname);
}

/** Mount points below `dir` (the namespaces' bind mounts; `dir` itself may be a private bind of itself), from mountinfo. */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(`${dir}/`));
}

function listDir(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}
