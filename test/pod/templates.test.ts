import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { locateGuestImage } from '../../src/vm/guest-image.js';
import { unary } from '../helpers/daemon.js';
import { containerConfig, sandboxConfig, waitFor } from '../helpers/cri.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import { qemuProcessesUsing } from '../helpers/vm.js';
import { createCniWorld, networksFor, type CniWorld } from '../network/cni-fixture.js';

/**
 * VM templates end to end, through podvisord's socket: sandboxes of a handler with
 * `template = true` start as clones of one saved VM, each its own machine (clock, RNG,
 * boot_id, MAC, hostname), private to itself, on its pod network, surviving a daemon
 * kill -9, leaving nothing when removed; a changed input rebuilds the template and a
 * broken one falls back to a cold boot with a log line.
 */

const HANDLER = 'tpl';

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

describe('sandboxes cloned from a VM template', () => {
  let world: CniWorld;
  let env: PodTestEnv;
  let guestCopy: string;
  let gateway: Server | undefined;
  const rt = () => env.daemon.client.runtime;
  const pods: Record<string, { id: string; cfg: ReturnType<typeof sandboxConfig>; container: string }> = {};

  const info = async (id: string) => JSON.parse((await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: id, verbose: true })).info.info!) as { vm: { pid: number; template?: string; runDir: string } };
  const templatesDir = () => join(env.daemon.state, 'templates');
  const templateKeys = () => (existsSync(templatesDir()) ? readdirSync(templatesDir()) : []);
  const exec = async (container: string, cmd: string) => {
    const r = await unary(rt(), 'ExecSync', { container_id: container, cmd: ['sh', '-c', cmd], timeout: 60 });
    assert.equal(r.exit_code, 0, `${cmd}: ${Buffer.from(r.stderr).toString()}`);
    return Buffer.from(r.stdout).toString('utf8').trim();
  };
  /** A pod of the template handler with one idle busybox container. */
  const runPod = async (name: string) => {
    const cfg = sandboxConfig(name, join(env.dir, 'logs', name));
    const id = (await unary(rt(), 'RunPodSandbox', { config: cfg, runtime_handler: HANDLER })).pod_sandbox_id;
    const container = (await unary(rt(), 'CreateContainer', { pod_sandbox_id: id, sandbox_config: cfg, config: containerConfig('idle', env.busybox, ['sleep', '100000']) })).container_id;
    await unary(rt(), 'StartContainer', { container_id: container });
    pods[name] = { id, cfg, container };
    return pods[name]!;
  };
  const removePod = async (name: string) => {
    await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: pods[name]!.id });
    delete pods[name];
  };

  before(async () => {
    world = createCniWorld('tpl');
    world.writeConfig(world.conflist({ dualStack: false }));
    // The handler boots its own copy of the guest image, so the test can change an input (the kernel's mtime).
    const image = locateGuestImage();
    guestCopy = join(world.dir, 'guest');
    mkdirSync(guestCopy);
    for (const f of [image.kernel, image.initrd, image.systemDisk, join(image.dir, 'manifest.json')]) copyFileSync(f, join(guestCopy, f.split('/').pop()!));
    env = await startPodTestEnv({}, [
      `[cni]\nconf_dir = "${world.confDir}"\nbin_dirs = ["/usr/lib/cni"]\n`,
      `[runtimes.${HANDLER}]\ntemplate = true\nkernel = "${join(guestCopy, 'vmlinux')}"\ninitrd = "${join(guestCopy, 'initrd.img')}"\nsystem_disk = "${join(guestCopy, 'system.erofs')}"\n`,
    ].join(''));
    await env.pull(env.busybox);
  });

  after(async () => {
    gateway?.close();
    if (env) {
      for (const p of Object.values(pods)) await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: p.id }).catch(() => undefined);
      await world.cleanup([networksFor(world, join(env.dir, 'state', 'netns'), join(env.dir, 'root', 'cni'))]);
      const state = env.daemon.state;
      await env.dispose();
      assert.deepEqual(qemuProcessesUsing(state), [], 'no QEMU left, template VMs included');
    } else {
      await world?.cleanup();
    }
  });

  let ramHash = '';
  let key = '';

  test('the first sandbox builds the template; both sandboxes are clones of it', async () => {
    const a = await runPod('clone-a');
    const b = await runPod('clone-b');
    const [ia, ib] = [await info(a.id), await info(b.id)];
    assert.ok(ia.vm.template, 'clone-a was cloned');
    assert.equal(ib.vm.template, ia.vm.template, 'one template for both');
    key = ia.vm.template!;
    assert.deepEqual(templateKeys(), [key]);
    const dir = join(templatesDir(), key);
    assert.ok(existsSync(join(dir, 'template.json')) && existsSync(join(dir, 'state')) && existsSync(join(dir, 'ram')));
    assert.ok(!existsSync(join(dir, 'run')), 'the template VM is gone once saved');
    ramHash = await sha256(join(dir, 'ram'));
    assert.match(env.daemon.output(), /"boot":"template"/);
    // The handler's default template tuning: clones run with a 16 MiB TCG cache, the template
    // (so every clone) with the jitless agent; the RAM file's zero pages were made holes.
    const argv = readFileSync(`/proc/${ia.vm.pid}/cmdline`, 'utf8').split('\0');
    const accel = argv[argv.indexOf('-accel') + 1];
    if (accel !== 'kvm') assert.equal(accel, 'tcg,tb-size=16', 'the clone runs with the clone TCG cache size');
    assert.match(argv[argv.indexOf('-append') + 1] ?? '', /(^| )podvisor\.agent_v8=jitless( |$)/);
    assert.match(env.daemon.output(), /template RAM file: zero pages made holes/);
  });

  test('each clone is its own machine: clock, RNG output, boot_id, MAC, hostname', async () => {
    const look = async (name: string) => {
      const c = pods[name]!.container;
      const hostSeconds = Date.now() / 1000;
      return {
        clockSkew: Math.abs(Number(await exec(c, 'date +%s')) - hostSeconds),
        // Boot time = wall clock - time since boot: constant in a guest however its clock drifts,
        // and the template's in every clone whose clock was not set.
        btime: Number(await exec(c, 'sed -n "s/^btime //p" /proc/stat')),
        random: await exec(c, 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"'),
        bootId: await exec(c, 'cat /proc/sys/kernel/random/boot_id'),
        mac: await exec(c, 'cat /sys/class/net/eth0/address'),
        hostname: await exec(c, 'hostname'),
      };
    };
    const a = await look('clone-a');
    const b = await look('clone-b');
    console.log(`# clone-a ${JSON.stringify(a)}\n# clone-b ${JSON.stringify(b)}`);
    // clone-b started at least seconds after clone-a from the same saved guest: with its clock set
    // at start its boot time is that much later. (A TCG guest's clock runs slow on a loaded host, so
    // the skew against the host grows with the clone's age; it is printed, only bounded loosely.)
    assert.ok(b.btime - a.btime >= 1, `clock-derived values differ: boot times ${a.btime} and ${b.btime}`);
    assert.ok(a.clockSkew < 600 && b.clockSkew < 600, `the clones' wall clocks are near the host's (skew ${a.clockSkew.toFixed(1)} s, ${b.clockSkew.toFixed(1)} s)`);
    assert.equal(a.random.length, 64);
    assert.notEqual(a.random, b.random, 'different RNG output');
    assert.match(a.bootId, /^[0-9a-f-]{36}$/);
    assert.notEqual(a.bootId, b.bootId, 'different boot_id');
    assert.notEqual(a.mac, b.mac, 'different MAC');
    assert.notEqual(a.mac, '02:70:76:00:00:01', 'not the template NIC MAC');
    assert.deepEqual([a.hostname, b.hostname], ['clone-a', 'clone-b']);
  });

  test('a file written in one clone is invisible to the other; the template RAM file is unchanged', async () => {
    await exec(pods['clone-a']!.container, 'echo only-in-a > /tmp/marker && dd if=/dev/urandom of=/tmp/fill bs=1M count=8 2>/dev/null');
    assert.equal(await exec(pods['clone-a']!.container, 'cat /tmp/marker'), 'only-in-a');
    assert.equal(await exec(pods['clone-b']!.container, 'test -e /tmp/marker && echo present || echo absent'), 'absent');
    assert.equal(await sha256(join(templatesDir(), key, 'ram')), ramHash, 'clones map the template RAM privately');
  });

  test('a clone is on its pod network: it reaches the gateway', async () => {
    const gw = `${world.v4Prefix}.1`;
    gateway = createServer((s) => s.end('hello-from-gateway'));
    await new Promise<void>((r) => gateway!.listen(0, gw, r));
    const port = (gateway.address() as AddressInfo).port;
    for (const name of ['clone-a', 'clone-b']) {
      assert.equal(await exec(pods[name]!.container, `nc -w 10 ${gw} ${port} </dev/null`), 'hello-from-gateway');
    }
  });

  test('a clone survives kill -9 of podvisord and is found again', async () => {
    const { id, container } = pods['clone-a']!;
    const pid = (await info(id)).vm.pid;
    await env.killDaemon();
    assert.ok(existsSync(`/proc/${pid}`), 'the clone outlived the daemon');
    await env.startDaemon();
    const st = (await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: id })).status!;
    assert.equal(st.state, 'SANDBOX_READY');
    assert.equal((await info(id)).vm.pid, pid, 'the same QEMU');
    assert.equal(await exec(container, 'cat /tmp/marker'), 'only-in-a');
  });

  test('stop and remove of a clone leave no QEMU and no files', async () => {
    const { id } = pods['clone-b']!;
    const { pid, runDir } = (await info(id)).vm;
    await unary(rt(), 'StopPodSandbox', { pod_sandbox_id: id });
    // (A zombie may stay: a QEMU started by the daemon killed above has init as its parent.)
    assert.deepEqual(qemuProcessesUsing(runDir), [], `QEMU (pid ${pid}) is gone after StopPodSandbox`);
    await removePod('clone-b');
    assert.ok(!existsSync(runDir), 'no run directory');
    assert.ok(!existsSync(join(env.daemon.root, 'pods', id)), 'no records');
    assert.deepEqual(qemuProcessesUsing(runDir), []);
    assert.deepEqual(templateKeys(), [key], 'the template stays for the next sandbox');
  });

  test("kill -9 of a clone's QEMU is seen: the sandbox turns NOTREADY and its container EXITED", async () => {
    const { id, container } = pods['clone-a']!;
    process.kill((await info(id)).vm.pid, 'SIGKILL');
    await waitFor('the clone to turn NOTREADY', async () => {
      const st = (await unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: id })).status!;
      return st.state === 'SANDBOX_NOTREADY' ? st : undefined;
    }, 30_000);
    const c = (await unary(rt(), 'ContainerStatus', { container_id: container })).status!;
    assert.equal(c.state, 'CONTAINER_EXITED');
    assert.equal(c.reason, 'PodVMExited');
    await removePod('clone-a');
  });

  test('a template whose inputs changed is rebuilt, and the old one removed', async () => {
    const kernel = join(guestCopy, 'vmlinux');
    const t = statSync(kernel).mtime;
    utimesSync(kernel, t, new Date(t.getTime() + 60_000));
    const c = await runPod('clone-c');
    const fresh = (await info(c.id)).vm.template;
    assert.ok(fresh && fresh !== key, `a new template (${fresh}) replaces ${key}`);
    assert.deepEqual(templateKeys(), [fresh]);
    assert.equal(await exec(c.container, 'hostname'), 'clone-c');
    key = fresh!;
  });

  test('a broken template falls back to a cold boot, with a log line', async () => {
    const state = join(templatesDir(), key, 'state');
    writeFileSync(state, Buffer.alloc(statSync(state).size, 0x5a)); // same size, garbage inside
    const d = await runPod('cold-d');
    assert.equal((await info(d.id)).vm.template, undefined, 'booted cold');
    assert.equal(await exec(d.container, 'hostname'), 'cold-d');
    assert.match(env.daemon.output(), /VM template unusable \(a clone of it failed to start\); removed, this sandbox boots cold/);
    assert.ok(!templateKeys().includes(key), 'the broken template is gone (the next sandbox rebuilds it)');
    await removePod('cold-d');
    await removePod('clone-c');
    await waitFor('no QEMU of removed pods', async () => (qemuProcessesUsing(join(env.daemon.state, 'vms')).length <= 1 ? true : undefined), 30_000);
  });
});


