import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, copyFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentClient, type AgentEvent, type ProcessExit } from '../../src/agent-client/index.js';
import { locateGuestImage, type GuestImage } from '../../src/vm/guest-image.js';
import { withProfileDefaults, type VmProfile } from '../../src/vm/profile.js';
import type { TapDevice } from '../../src/vm/qemu-args.js';
import { Vm } from '../../src/vm/vm.js';

/**
 * Test fixtures for the guest: the image (built once, cached by
 * hack/build-guest-image), one booted VM with a connected AgentClient per
 * test file, and a busybox root filesystem as an erofs disk to hot-plug.
 */

const repo = resolve(fileURLToPath(new URL('../..', import.meta.url)));
let built: GuestImage | undefined;

/** Builds the guest image if its inputs changed (a no-op otherwise) and locates it. */
export function ensureGuestImage(): GuestImage {
  if (!built) {
    execFileSync(join(repo, 'hack/build-guest-image'), { stdio: ['ignore', 'ignore', 'inherit'] });
    built = locateGuestImage();
  }
  return built;
}

export interface BootedGuest {
  vm: Vm;
  agent: AgentClient;
  runDir: string;
  image: GuestImage;
  /** Everything the agent pushed since boot, in order. */
  events: AgentEvent[];
  consoleLog(): string;
  /** Stops the VM (agent Shutdown first) and removes the run directory. */
  stop(): Promise<void>;
}

/** Boots one guest through src/vm and connects to its agent. */
export async function bootGuest(profile: Partial<VmProfile> = {}, opts: { deadlineMs?: number; tap?: TapDevice } = {}): Promise<BootedGuest> {
  const image = ensureGuestImage();
  const runDir = mkdtempSync('/tmp/podvisor-guest-');
  const vm = await Vm.launch({
    id: `agent-test-${process.pid}`,
    runDir,
    profile: withProfileDefaults({ kernel: image.kernel, initrd: image.initrd, systemDisk: image.systemDisk, accel: 'tcg', memoryMiB: 512, ...profile }),
    tap: opts.tap,
  });
  const consoleLog = () => {
    try {
      return readFileSync(vm.paths.consoleLog, 'utf8');
    } catch {
      return '';
    }
  };
  let agent: AgentClient;
  try {
    agent = await AgentClient.connect(vm.agentSocket, { deadlineMs: opts.deadlineMs ?? 90_000 });
  } catch (err) {
    const log = consoleLog();
    await vm.destroy({ timeoutMs: 5000 }).catch(() => undefined);
    rmSync(runDir, { recursive: true, force: true });
    throw new Error(`guest did not become ready: ${(err as Error).message}\nconsole:\n${log}`);
  }
  const events: AgentEvent[] = [];
  agent.on('output', (output) => events.push({ output, sequence: 0 }));
  agent.on('exit', (exit) => events.push({ exit, sequence: 0 }));
  return {
    vm,
    agent,
    runDir,
    image,
    events,
    consoleLog,
    async stop() {
      await vm.destroy({ graceful: () => agent.shutdown(), timeoutMs: 10_000 }).catch(() => undefined);
      agent.close();
      rmSync(runDir, { recursive: true, force: true });
    },
  };
}

/** Output of one process collected from the agent's events, and its exit. */
export function collectProcess(agent: AgentClient, containerId: string, execId = '') {
  let stdout = '';
  let stderr = '';
  let resolveExit!: (e: ProcessExit) => void;
  const exit = new Promise<ProcessExit>((r) => { resolveExit = r; });
  const onOutput = (o: { containerId: string; execId: string; stream: string; data: Uint8Array }) => {
    if (o.containerId !== containerId || o.execId !== execId) return;
    if (o.stream === 'STDOUT') stdout += Buffer.from(o.data).toString();
    else stderr += Buffer.from(o.data).toString();
  };
  const onExit = (e: ProcessExit) => {
    if (e.containerId === containerId && e.execId === execId) resolveExit(e);
  };
  agent.on('output', onOutput);
  agent.on('exit', onExit);
  return {
    get stdout() { return stdout; },
    get stderr() { return stderr; },
    exit,
    /** Resolves once stdout contains `text`. */
    async waitFor(text: string, timeoutMs = 60_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!stdout.includes(text)) {
        if (Date.now() > deadline) throw new Error(`"${text}" did not appear on stdout of ${containerId}/${execId}; got ${JSON.stringify(stdout)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    dispose() {
      agent.off('output', onOutput);
      agent.off('exit', onExit);
    },
  };
}

/**
 * A busybox root filesystem (Debian's busybox-static) as an erofs disk image:
 * what the image service will later make from an OCI image.
 */
export function busyboxRootfsDisk(): { path: string; remove(): void } {
  const dir = mkdtempSync('/tmp/podvisor-rootfs-');
  const tree = join(dir, 'tree');
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'root', 'run']) mkdirSync(join(tree, d), { recursive: true });
  copyFileSync('/bin/busybox', join(tree, 'bin/busybox'));
  for (const applet of execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).split('\n').filter(Boolean)) {
    if (applet !== 'busybox') symlinkSync('busybox', join(tree, 'bin', applet));
  }
  writeFileSync(join(tree, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
  writeFileSync(join(tree, 'etc/group'), 'root:x:0:\nnobody:x:65534:\n');
  const path = join(dir, 'busybox.erofs');
  execFileSync('mkfs.erofs', ['--quiet', '--all-root', '-T0', path, tree]);
  rmSync(tree, { recursive: true, force: true });
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A host tap device with an address, for a guest NIC to talk to; `remove()`
 * deletes it. Needs root (this host's tests run as root).
 */
export function hostTap(hostCidr: string): { name: string; mac: string; remove(): void } {
  const name = `pvt${process.pid % 100000}`;
  execFileSync('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap']);
  try {
    execFileSync('ip', ['addr', 'add', hostCidr, 'dev', name]);
    execFileSync('ip', ['link', 'set', 'dev', name, 'up']);
  } catch (err) {
    execFileSync('ip', ['link', 'del', name]);
    throw err;
  }
  const mac = readFileSync(`/sys/class/net/${name}/address`, 'utf8').trim();
  return { name, mac, remove: () => execFileSync('ip', ['link', 'del', name]) };
}

/** A minimal OCI runtime spec for a busybox container rooted at `rootPath` in the guest. */
export function busyboxSpec(rootPath: string, args: string[], opts: { tty?: boolean; env?: string[]; memoryLimitBytes?: number } = {}): Uint8Array {
  const spec = {
    ociVersion: '1.0.2',
    process: {
      terminal: !!opts.tty,
      ...(opts.tty ? { consoleSize: { height: 24, width: 80 } } : {}),
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/bin', 'TERM=xterm', ...(opts.env ?? [])],
      cwd: '/',
      capabilities: {
        bounding: ['CAP_KILL', 'CAP_CHOWN', 'CAP_SETUID', 'CAP_SETGID', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_NET_BIND_SERVICE', 'CAP_NET_RAW'],
        effective: ['CAP_KILL', 'CAP_CHOWN', 'CAP_SETUID', 'CAP_SETGID', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_NET_BIND_SERVICE', 'CAP_NET_RAW'],
        permitted: ['CAP_KILL', 'CAP_CHOWN', 'CAP_SETUID', 'CAP_SETGID', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_NET_BIND_SERVICE', 'CAP_NET_RAW'],
      },
      noNewPrivileges: true,
    },
    root: { path: rootPath, readonly: false },
    hostname: 'busybox',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ],
    // No network namespace: containers share the guest's (the pod's) network, as in a pod.
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      resources: opts.memoryLimitBytes ? { memory: { limit: opts.memoryLimitBytes } } : {},
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list'],
      readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
    },
  };
  return Buffer.from(JSON.stringify(spec));
}
