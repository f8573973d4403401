import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmdirSync, rmSync, writeFileSync, type Dirent } from 'node:fs';
import { basename, join } from 'node:path';
import { criClient, unary, type CriClient } from '../../src/cri/client.js';
import { cleanupOnSignal } from './signal-cleanup.js';

/**
 * A real containerd (Debian's package, runc underneath) for the pass-through
 * tests: its own socket, root, state, runc root and CNI config in a temp
 * folder, a generated config, and the test registry as its only registry.
 * No systemd is involved. `stop()` removes every pod it runs, stops it, kills
 * shims and containers it left, unmounts what it mounted and removes the
 * folder; the same clean-up runs (synchronously) if the test process is
 * interrupted or exits without calling it.
 */
export interface TestContainerd {
  dir: string;
  socket: string;
  /** `unix:///…/containerd.sock`, for podvisor's `[passthrough] endpoint` */
  endpoint: string;
  /**
   * A cgroupfs parent for pods' `linux.cgroup_parent` (kubelet always sends one; containerd's pod
   * stats need it). Removed with everything else.
   */
  cgroupParent: string;
  /** A CRI client straight to containerd, to check what podvisor did there. */
  client: CriClient;
  proc: ChildProcess;
  output(): string;
  /** Stops containerd only (its shims and containers keep running), as a crash of it would. */
  kill(): Promise<void>;
  /** Starts containerd again on the same folders after `kill`. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface ContainerdOptions {
  /** `127.0.0.1:PORT` of the test registry (plain HTTP). */
  registryHost: string;
  /** Its sandbox_image (Debian's containerd defaults to registry.k8s.io/pause:3.6, which this machine cannot reach). */
  pauseImage: string;
  /** A CNI network for non-host-network pods: a bridge of this name on this /24 (`10.x.y.0/24`). */
  cni?: { bridge: string; subnet: string };
}

const CNI_BIN_DIRS = ['/usr/lib/cni', '/opt/cni/bin'];
/** containerd 1.6's CRI plugin puts pod network namespaces here, named cni-<uuid>. */
const NETNS_DIR = '/var/run/netns';

export async function startContainerd(opts: ContainerdOptions): Promise<TestContainerd> {
  // Short: unix socket paths over 107 bytes fail, and containerd nests sockets under its state dir.
  const dir = mkdtempSync('/tmp/ctd-');
  const socket = join(dir, 'c.sock');
  const netDir = join(dir, 'net.d');
  mkdirSync(netDir);
  mkdirSync(join(dir, 'certs.d', opts.registryHost), { recursive: true });
  writeFileSync(join(dir, 'certs.d', opts.registryHost, 'hosts.toml'),
    `server = "http://${opts.registryHost}"\n[host."http://${opts.registryHost}"]\n  capabilities = ["pull", "resolve"]\n`);
  if (opts.cni) {
    writeFileSync(join(netDir, '10-test.conflist'), JSON.stringify({
      cniVersion: '0.4.0',
      name: `${opts.cni.bridge}-net`,
      plugins: [
        { type: 'bridge', bridge: opts.cni.bridge, isGateway: true, ipMasq: false, ipam: { type: 'host-local', ranges: [[{ subnet: opts.cni.subnet }]], dataDir: join(dir, 'ipam') } },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    }));
  }
  const config = `version = 2
root = "${dir}/root"
state = "${dir}/state"
[grpc]
  address = "${socket}"
[ttrpc]
  address = "${socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${opts.pauseImage}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # this machine's root lacks CAP_SYS_RESOURCE: containerd may not lower oom_score_adj below its own
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${CNI_BIN_DIRS.find((d) => existsDir(d)) ?? CNI_BIN_DIRS[0]}"
    conf_dir = "${netDir}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "${dir}/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "${dir}/runc"
`;
  writeFileSync(join(dir, 'config.toml'), config);

  let out = '';
  let proc!: ChildProcess;
  const launch = async () => {
    proc = spawn('containerd', ['--config', join(dir, 'config.toml')], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout!.on('data', (d) => (out += d));
    proc.stderr!.on('data', (d) => (out += d));
    const deadline = Date.now() + 60_000;
    while (!out.includes('containerd successfully booted')) {
      if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`containerd did not start:\n${out.slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const netnsBefore = new Set(safeList(NETNS_DIR));
  const cgroupParent = `/${basename(dir)}`;
  const cleanupSync = () => cleanUp(dir, proc, netnsBefore, opts.cni?.bridge, cgroupParent);
  // On SIGINT/SIGTERM through the fixtures' one signal handler; on a plain exit (a crashed test file) here.
  const offSignal = cleanupOnSignal(cleanupSync);
  process.on('exit', cleanupSync);
  const forget = () => {
    offSignal();
    process.off('exit', cleanupSync);
  };
  try {
    await launch();
  } catch (e) {
    cleanupSync();
    forget();
    throw e;
  }
  const client = criClient(socket);
  const exited = () => proc.exitCode !== null || proc.signalCode !== null;
  return {
    dir,
    socket,
    endpoint: `unix://${socket}`,
    cgroupParent,
    client,
    get proc() {
      return proc;
    },
    output: () => out,
    async kill() {
      if (!exited()) {
        const gone = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGKILL');
        await gone;
      }
    },
    restart: launch,
    async stop() {
      try {
        const { items } = await unary(client.runtime, 'ListPodSandbox', {}, { deadline: Date.now() + 30_000 });
        for (const s of items) {
          await unary(client.runtime, 'StopPodSandbox', { pod_sandbox_id: s.id }, { deadline: Date.now() + 60_000 });
          await unary(client.runtime, 'RemovePodSandbox', { pod_sandbox_id: s.id }, { deadline: Date.now() + 60_000 });
        }
      } catch {
        /* containerd gone: the clean-up below kills what is left */
      }
      client.close();
      if (!exited()) {
        const gone = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
      }
      cleanupSync();
      forget();
    },
  };
}

function existsDir(d: string): boolean {
  try {
    return readdirSync(d).length > 0;
  } catch {
    return false;
  }
}

/**
 * Everything this containerd left, without waiting on it: containers (through
 * runc's own root for this instance), shims serving its socket, containerd
 * itself, mounts under its folder, network namespaces it made, the folder.
 */
function cleanUp(dir: string, proc: ChildProcess | undefined, netnsBefore: Set<string>, bridge: string | undefined, cgroupParent: string): void {
  const runcRoot = join(dir, 'runc');
  for (const ns of safeList(runcRoot)) {
    for (const id of safeList(join(runcRoot, ns))) {
      try {
        execFileSync('runc', ['--root', join(runcRoot, ns), 'delete', '--force', id], { stdio: 'ignore', timeout: 10_000 });
      } catch {
        /* already gone */
      }
    }
  }
  for (const pid of safeList('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd = '';
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    // shims carry `-address <socket>` of the containerd that started them
    if (cmd.startsWith('/usr/bin/containerd-shim') && cmd.includes(`${dir}/c.sock`)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    try {
      proc.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    try {
      execFileSync('umount', ['-l', m], { stdio: 'ignore' });
    } catch {
      /* already unmounted */
    }
  }
  // Network namespaces of pods that were not removed through the CRI (an interrupted run).
  for (const ns of safeList(NETNS_DIR).filter((n) => n.startsWith('cni-') && !netnsBefore.has(n))) {
    try {
      execFileSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
  }
  if (bridge) {
    try {
      execFileSync('ip', ['link', 'delete', bridge], { stdio: 'ignore' });
    } catch {
      /* never made (no pod used the network) */
    }
  }
  // The pods' cgroups under each v1 hierarchy (runc removed the containers' own; their parents stay).
  for (const hierarchy of safeList('/sys/fs/cgroup')) removeCgroupTree(join('/sys/fs/cgroup', hierarchy, cgroupParent));
  rmSync(dir, { recursive: true, force: true });
}

/** Empty cgroup directories are removed with rmdir, deepest first (their files cannot be unlinked). */
function removeCgroupTree(path: string): void {
  let entries: Dirent[];
  try {
    entries = readdirSync(path, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) if (e.isDirectory()) removeCgroupTree(join(path, e.name));
  try {
    rmdirSync(path);
  } catch {
    /* still in use: a process the clean-up could not kill */
  }
}

function safeList(d: string): string[] {
  try {
    return readdirSync(d);
  } catch {
    return [];
  }
}
