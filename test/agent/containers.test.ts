import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GUEST_POD_PID_NAMESPACE } from '../../src/agent-protocol/guest-paths.js';
import { isPodvisorError } from '../../src/errors.js';
import { bootGuest, busyboxRootfsDisk, busyboxSpec, collectProcess, type BootedGuest } from '../helpers/guest.js';

// One real guest (QEMU microvm under TCG) for the whole file; every call goes
// through the agent's ttRPC channel on virtio-serial.
let guest: BootedGuest;
let disk: { path: string; remove(): void };
const IMAGE_MOUNT = '/run/podvisor/images/busybox';
let rootSeq = 0;

async function rootfs(): Promise<string> {
  const target = `/run/podvisor/rootfs/c${++rootSeq}`;
  await guest.agent.mountOverlay({ lowerDirs: [IMAGE_MOUNT], target });
  return target;
}

async function runContainer(id: string, args: string[], opts: { tty?: boolean; stdin?: boolean; memoryLimitBytes?: number } = {}) {
  const root = await rootfs();
  await guest.agent.createContainer({ containerId: id, ociSpecJson: busyboxSpec(root, args, opts), stdin: opts.stdin });
  const io = collectProcess(guest.agent, id);
  const pid = await guest.agent.startContainer(id);
  return { io, pid, root };
}

async function cleanup(id: string, root: string) {
  await guest.agent.deleteContainer({ containerId: id, force: true });
  await guest.agent.unmount({ path: root, removeDir: true });
}

before(async () => {
  disk = busyboxRootfsDisk();
  guest = await bootGuest({}, { deadlineMs: 400_000 }); // a machine full of emulated VMs boots slowly
  const plugged = await guest.vm.hotplugDisk({ id: 'busybox', path: disk.path, readOnly: true });
  const mounted = await guest.agent.mountDisk({ serial: plugged.serial, mountPoint: IMAGE_MOUNT });
  assert.match(mounted.device, /^\/dev\/sd[a-z]$/);
});

after(async () => {
  await guest?.stop();
  disk?.remove();
});

test('busybox container echoes to stdout and stderr and exits 0', async () => {
  const { io, pid, root } = await runContainer('echo', ['sh', '-c', 'echo hello from the guest; echo to stderr >&2']);
  assert.ok(pid > 1);
  const status = await guest.agent.waitProcess({ containerId: 'echo' });
  assert.equal(status.exitCode, 0);
  assert.equal(status.oomKilled, false);
  const exit = await io.exit;
  assert.equal(exit.exitCode, 0);
  assert.equal(io.stdout, 'hello from the guest\n');
  assert.equal(io.stderr, 'to stderr\n');
  const listed = (await guest.agent.listContainers()).containers.find((c) => c.containerId === 'echo');
  assert.equal(listed?.state, 'stopped');
  await cleanup('echo', root);
  assert.equal((await guest.agent.listContainers()).containers.some((c) => c.containerId === 'echo'), false);
});

test('exit codes come back as the process set them', async () => {
  const { root } = await runContainer('exit7', ['sh', '-c', 'exit 7']);
  assert.equal((await guest.agent.waitProcess({ containerId: 'exit7' })).exitCode, 7);
  await cleanup('exit7', root);
});

test('SIGTERM is delivered to a trapping process; SIGKILL ends one that ignores it', async () => {
  const { io, root } = await runContainer('term', ['sh', '-c', 'trap "echo got TERM; exit 42" TERM; echo ready; while true; do sleep 0.1; done']);
  await io.waitFor('ready');
  await guest.agent.signalProcess({ containerId: 'term', signal: 15 });
  assert.equal((await guest.agent.waitProcess({ containerId: 'term' })).exitCode, 42);
  await io.waitFor('got TERM');
  await cleanup('term', root);

  const stubborn = await runContainer('kill', ['sh', '-c', 'trap "" TERM; echo ready; while true; do sleep 0.1; done']);
  await stubborn.io.waitFor('ready');
  await guest.agent.signalProcess({ containerId: 'kill', signal: 15 });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await guest.agent.listContainers()).containers.find((c) => c.containerId === 'kill')?.state, 'running');
  await guest.agent.signalProcess({ containerId: 'kill', signal: 9 });
  assert.equal((await guest.agent.waitProcess({ containerId: 'kill' })).exitCode, 128 + 9);
  await cleanup('kill', stubborn.root);
});

test('stdin round trip: write, close, and the process sees EOF', async () => {
  const { io, root } = await runContainer('stdin', ['sh', '-c', 'while read line; do echo "echo: $line"; done; echo "stdin closed"'], { stdin: true });
  await guest.agent.writeStdin({ containerId: 'stdin' }, Buffer.from('first\n'));
  await io.waitFor('echo: first');
  assert.equal(await guest.agent.writeStdin({ containerId: 'stdin' }, Buffer.from('second\n')), 7);
  await io.waitFor('echo: second');
  await guest.agent.closeStdin({ containerId: 'stdin' });
  assert.equal((await guest.agent.waitProcess({ containerId: 'stdin' })).exitCode, 0);
  assert.equal(io.stdout, 'echo: first\necho: second\nstdin closed\n');
  await cleanup('stdin', root);
});

test('tty session: output through the terminal, resize seen by the process', async () => {
  // SIGWINCH interrupts `read`, so read until a line arrives.
  const script = 'stty size; trap "stty size" WINCH; echo ready; until read line; do :; done; echo "typed: $line"; stty size';
  const { io, root } = await runContainer('tty', ['sh', '-c', script], { tty: true, stdin: true });
  await io.waitFor('ready');
  await guest.agent.resizeTty({ containerId: 'tty' }, 40, 132);
  await io.waitFor('40 132');
  await guest.agent.writeStdin({ containerId: 'tty' }, Buffer.from('over the tty\r'));
  assert.equal((await guest.agent.waitProcess({ containerId: 'tty' })).exitCode, 0);
  // A tty turns \n into \r\n and echoes input.
  assert.match(io.stdout, /^24 80\r\nready\r\n/);
  assert.match(io.stdout, /typed: over the tty\r\n40 132\r\n$/);
  await cleanup('tty', root);
});

test('exec into a running container: args, env, cwd, user, exit code, tty', async () => {
  const { io, root } = await runContainer('host', ['sh', '-c', 'echo up; while true; do sleep 0.2; done']);
  await io.waitFor('up');
  const exec = collectProcess(guest.agent, 'host', 'e1');
  await guest.agent.execProcess({ containerId: 'host', execId: 'e1', args: ['sh', '-c', 'echo "$GREETING from $(pwd) as $(id -u):$(id -g)"; exit 3'], env: ['PATH=/bin', 'GREETING=hi'], cwd: '/tmp', user: { uid: 65534, gid: 65534 } });
  assert.equal((await guest.agent.waitProcess({ containerId: 'host', execId: 'e1' })).exitCode, 3);
  await exec.exit;
  assert.equal(exec.stdout, 'hi from /tmp as 65534:65534\n');

  const ttyExec = collectProcess(guest.agent, 'host', 'e2');
  await guest.agent.execProcess({ containerId: 'host', execId: 'e2', args: ['sh', '-c', 'stty size; tty'], tty: true, ttySize: { rows: 30, cols: 100 } });
  assert.equal((await guest.agent.waitProcess({ containerId: 'host', execId: 'e2' })).exitCode, 0);
  assert.match(ttyExec.stdout, /30 100\r\n\/dev\/pts\/\d+/);

  await assert.rejects(guest.agent.execProcess({ containerId: 'nope', execId: 'x', args: ['true'] }), (e) => isPodvisorError(e, 'NOT_FOUND'));
  await assert.rejects(guest.agent.execProcess({ containerId: 'host', execId: '../bad', args: ['true'] }), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
  await guest.agent.signalProcess({ containerId: 'host', signal: 9 });
  await guest.agent.waitProcess({ containerId: 'host' });
  await cleanup('host', root);
});

test('cgroup v2 stats change under load; memory limit and OOM flag', async () => {
  const { io, root } = await runContainer('load', ['sh', '-c', 'echo idle; read go; echo busy; i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; echo done; read stop'], { stdin: true, memoryLimitBytes: 64 << 20 });
  await io.waitFor('idle');
  const before = await guest.agent.containerStats('load');
  assert.equal(before.memory.limitBytes, 64 << 20);
  assert.ok(before.pids.current >= 1);
  await guest.agent.writeStdin({ containerId: 'load' }, Buffer.from('go\n'));
  await io.waitFor('done', 120_000);
  const afterLoad = await guest.agent.containerStats('load');
  assert.ok(afterLoad.cpu.usageUsec > before.cpu.usageUsec + 100_000, `cpu ${before.cpu.usageUsec} -> ${afterLoad.cpu.usageUsec}`);
  assert.ok(afterLoad.memory.currentBytes > 0);
  await guest.agent.closeStdin({ containerId: 'load' });
  await guest.agent.waitProcess({ containerId: 'load' });
  await cleanup('load', root);

  // 16 MiB limit, then allocate far more in shell memory: the kernel OOM-kills it.
  const oom = await runContainer('oom', ['sh', '-c', 'x=0123456789abcdef; while true; do x="$x$x"; done'], { memoryLimitBytes: 16 << 20 });
  const status = await guest.agent.waitProcess({ containerId: 'oom' });
  assert.equal(status.oomKilled, true);
  assert.equal(status.exitCode, 137);
  assert.ok((await guest.agent.containerStats('oom')).memory.oomKills >= 1);
  await cleanup('oom', oom.root);
  void io;
});

test('ReadFile reads a file of the image tree; missing files say so', async () => {
  const passwd = await guest.agent.readFile({ root: IMAGE_MOUNT, path: '/etc/passwd' });
  assert.equal(passwd.exists, true);
  assert.match(Buffer.from(passwd.data).toString(), /^root:x:0:0:/);
  assert.equal((await guest.agent.readFile({ root: IMAGE_MOUNT, path: '/etc/shadow' })).exists, false);
  // /bin/sh is a symlink to busybox inside the tree: it resolves, and busybox is over the 1 MiB cap.
  await assert.rejects(guest.agent.readFile({ root: IMAGE_MOUNT, path: '/bin/sh' }), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /bytes, more than/.test(e.message));
});

test('bad requests get typed errors', async () => {
  await assert.rejects(guest.agent.createContainer({ containerId: 'bad', ociSpecJson: Buffer.from('{not json') }), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(guest.agent.createContainer({ containerId: 'bad', ociSpecJson: busyboxSpec('/does/not/exist', ['true']) }), (e) => isPodvisorError(e, 'FAILED_PRECONDITION'));
  await assert.rejects(guest.agent.startContainer('missing'), (e) => isPodvisorError(e, 'NOT_FOUND'));
  await assert.rejects(guest.agent.mountDisk({ serial: 'no-such-disk', mountPoint: '/run/x', waitMs: 200 }), (e) => isPodvisorError(e, 'DEADLINE_EXCEEDED') && /no-such-disk/.test(e.message));
  await assert.rejects(guest.agent.mountOverlay({ lowerDirs: ['../etc'], target: '/run/y' }), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
});

test('a recursive read-only bind ("rro") is read-only below its submounts; a plain "ro" bind is not', async () => {
  // A writable tree with a writable submount, both made in the guest: the source of the bind.
  const vol = await rootfs();
  const sub = await guest.agent.mountOverlay({ lowerDirs: [IMAGE_MOUNT], target: `${vol}/sub` });
  assert.ok(sub.upperDir);
  const script = 'touch /data/top && echo top=rw || echo top=ro; touch /data/sub/below && echo sub=rw || echo sub=ro';
  const run = async (id: string, options: string[]) => {
    const root = await rootfs();
    const spec = JSON.parse(Buffer.from(busyboxSpec(root, ['sh', '-c', script])).toString()) as { mounts: unknown[] };
    spec.mounts.push({ destination: '/data', type: 'bind', source: vol, options });
    await guest.agent.createContainer({ containerId: id, ociSpecJson: Buffer.from(JSON.stringify(spec)) });
    const io = collectProcess(guest.agent, id);
    await guest.agent.startContainer(id);
    const exit = await io.exit;
    await cleanup(id, root);
    return { exit, out: io.stdout.trim().split('\n') };
  };
  const plain = await run('ro-plain', ['rbind', 'ro']);
  assert.deepEqual(plain.out, ['top=ro', 'sub=rw'], 'the kernel\'s plain ro bind leaves the submount writable');
  const rro = await run('ro-recursive', ['rbind', 'rro']);
  assert.deepEqual(rro.out, ['top=ro', 'sub=ro'], rro.out.join(' | '));
  await guest.agent.unmount({ path: `${vol}/sub` });
  await guest.agent.unmount({ path: vol, removeDir: true });
});

/** A container in the pod's shared PID namespace (PID mode POD): what it starts outlives its own process. */
async function runInPodPidNamespace(id: string, args: string[]) {
  const root = await rootfs();
  const spec = JSON.parse(Buffer.from(busyboxSpec(root, args)).toString()) as { linux: { namespaces: Array<{ type: string; path?: string }> } };
  spec.linux.namespaces = spec.linux.namespaces.map((n) => (n.type === 'pid' ? { type: 'pid', path: GUEST_POD_PID_NAMESPACE } : n));
  await guest.agent.createContainer({ containerId: id, ociSpecJson: Buffer.from(JSON.stringify(spec)) });
  const io = collectProcess(guest.agent, id);
  await guest.agent.startContainer(id);
  return { io, root };
}

test('an exit is reported while a background process it left holds stdout, after all output written before it', async () => {
  // 60000 bytes are still in the pipe when the shell exits; the background sleep keeps stdout open.
  const filler = "head -c 60000 /dev/zero | tr '\\0' x; echo";
  const sleeps = 'for f in /proc/[0-9]*; do [ "$(tr "\\0" " " < $f/cmdline)" = "sleep 100 " ] && echo ${f#/proc/}; done';
  const held = await runInPodPidNamespace('held', ['sh', '-c', `echo before; ${filler}; sleep 100 & exit 4`]);
  assert.equal((await guest.agent.waitProcess({ containerId: 'held' })).exitCode, 4);
  assert.equal((await held.io.exit).exitCode, 4);
  assert.equal(held.io.stdout, `before\n${'x'.repeat(60000)}\n`, 'the output before the exit is all there');

  const look = await runInPodPidNamespace('look', ['sh', '-c', 'echo up; while :; do sleep 1; done']);
  await look.io.waitFor('up');
  const countSleeps = async (execId: string) => {
    const ps = collectProcess(guest.agent, 'look', execId);
    await guest.agent.execProcess({ containerId: 'look', execId, args: ['sh', '-c', `${sleeps} | wc -l`] });
    await ps.exit;
    return Number(ps.stdout.trim());
  };
  // A container's processes end with it (its cgroup goes): its pipes close, so only an exec can leave them held.
  assert.equal(await countSleeps('ps1'), 0);

  const exec = collectProcess(guest.agent, 'look', 'bg');
  await guest.agent.execProcess({ containerId: 'look', execId: 'bg', args: ['sh', '-c', `echo exec; ${filler}; sleep 100 & exit 5`] });
  assert.equal((await guest.agent.waitProcess({ containerId: 'look', execId: 'bg' })).exitCode, 5);
  assert.equal((await exec.exit).exitCode, 5);
  assert.equal(exec.stdout, `exec\n${'x'.repeat(60000)}\n`, 'the output before the exit is all there');
  assert.equal(await countSleeps('ps2'), 1, 'the exec\'s background sleep still holds its stdout: the exit did not wait for it');

  await guest.agent.signalProcess({ containerId: 'look', signal: 9 });
  await guest.agent.waitProcess({ containerId: 'look' });
  await cleanup('look', look.root);
  await cleanup('held', held.root);
});
