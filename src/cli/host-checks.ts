import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AgentClient } from '../agent-client/index.js';
import type { PodvisorConfig } from '../config/config.js';
import { messageOf } from '../errors.js';
import { profileForHandler, vmProfileFor } from '../pod/vm-sizing.js';
import { locateGuestImage } from '../vm/guest-image.js';
import { startAccelProbe } from '../vm/host.js';
import { DEFAULT_QEMU_BINARY } from '../vm/profile.js';
import { Vm } from '../vm/vm.js';

const run = promisify(execFile);

export type CheckStatus = 'ok' | 'warn' | 'fail';
export interface CheckResult {
  item: string;
  status: CheckStatus;
  /** What was found, and for warn/fail what it means and what to do. */
  detail: string;
}

const ok = (item: string, detail: string): CheckResult => ({ item, status: 'ok', detail });
const warn = (item: string, detail: string): CheckResult => ({ item, status: 'warn', detail });
const fail = (item: string, detail: string): CheckResult => ({ item, status: 'fail', detail });

/** QEMU devices podvisor's VMs are built from (src/vm/qemu-args.ts); a missing one means no pod can start. */
const REQUIRED_DEVICES = ['virtio-serial-device', 'virtserialport', 'virtio-scsi-device', 'scsi-hd', 'virtio-net-device'];

/** Host readiness, one result per item, fast checks first. */
export async function staticChecks(config: PodvisorConfig): Promise<CheckResult[]> {
  return [
    process.getuid?.() === 0 ? ok('privileges', 'running as root (QEMU, network namespaces, mounts need it)') : fail('privileges', 'not root: podvisord needs root for QEMU, network namespaces and mounts'),
    await qemu(),
    await accelerator(config),
    vhostVsock(),
    guestImage(config),
    tool('mkfs.erofs', 'image disks (erofs-utils)', 'fail'),
    tool('ip', 'network namespaces (iproute2)', 'warn'),
    cgroupV2(),
    cniPlugins(config),
    cniConfig(config),
    virtiofsd(),
    directories(config),
  ];
}

async function qemu(): Promise<CheckResult> {
  try {
    const version = (await run(DEFAULT_QEMU_BINARY, ['--version'])).stdout.split('\n')[0]!.trim();
    const machines = (await run(DEFAULT_QEMU_BINARY, ['-machine', 'help'])).stdout;
    const devices = (await run(DEFAULT_QEMU_BINARY, ['-device', 'help'])).stdout;
    const missing = REQUIRED_DEVICES.filter((d) => !devices.includes(`"${d}"`));
    if (!/^microvm\s/m.test(machines)) return fail('qemu', `${version}: no microvm machine type (podvisor's default machine)`);
    if (missing.length) return fail('qemu', `${version}: missing devices ${missing.join(', ')}`);
    return ok('qemu', `${version}; microvm machine; ${REQUIRED_DEVICES.join(', ')}${devices.includes('"vhost-user-fs-device"') ? ', vhost-user-fs-device' : ''}`);
  } catch (e) {
    return fail('qemu', `${DEFAULT_QEMU_BINARY} does not run: ${messageOf(e)} (install qemu-system-x86)`);
  }
}

/** The daemon's own KVM probe (src/vm/host.ts): KVM counts only when a guest really ran under it. */
async function accelerator(config: PodvisorConfig): Promise<CheckResult> {
  const a = await startAccelProbe({ device: config.vm.kvmDevice, timeoutMs: config.vm.kvmProbeTimeoutMs });
  const took = a.probeMs !== undefined ? ` (probe ${a.probeMs} ms)` : '';
  if (a.accel === 'kvm') return ok('accelerator', `KVM: ${a.reason}${took}`);
  return warn('accelerator', `TCG (software emulation): ${a.reason}${took}. Pods run, several times slower to boot and compute, and TCG is not a security boundary: enable KVM (kvm_intel/kvm_amd, /dev/kvm) for production`);
}

function vhostVsock(): CheckResult {
  return existsSync('/dev/vhost-vsock')
    ? ok('vhost-vsock', '/dev/vhost-vsock present (not needed: the agent channel is virtio-serial)')
    : ok('vhost-vsock', 'absent; not needed: podvisor talks to the agent over virtio-serial');
}

function guestImage(config: PodvisorConfig): CheckResult {
  try {
    const g = locateGuestImage(config.guestDir);
    const mib = (p: string) => `${(statSync(p).size / 1024 / 1024).toFixed(0)} MiB`;
    return ok('guest image', `${g.dir}: kernel ${g.manifest.kernelVersion} (${mib(g.kernel)}), initrd ${mib(g.initrd)}, system disk ${mib(g.systemDisk)}${g.manifest.nodeVersion ? `, node ${g.manifest.nodeVersion}` : ''}${g.manifest.crunVersion ? `, crun ${g.manifest.crunVersion}` : ''}`);
  } catch (e) {
    return fail('guest image', messageOf(e));
  }
}

function tool(name: string, what: string, missing: CheckStatus): CheckResult {
  const dirs = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':');
  const found = dirs.map((d) => join(d, name)).find((p) => { try { accessSync(p, constants.X_OK); return true; } catch { return false; } });
  return found ? ok(name, `${found} (${what})`) : { item: name, status: missing, detail: `not found in PATH: needed for ${what}` };
}

function cgroupV2(): CheckResult {
  try {
    const controllers = readFileSync('/sys/fs/cgroup/cgroup.controllers', 'utf8').trim();
    return ok('cgroup v2', `unified hierarchy at /sys/fs/cgroup (controllers: ${controllers || 'none delegated'})`);
  } catch {
    return warn('cgroup v2', 'no unified cgroup v2 hierarchy at /sys/fs/cgroup: kubelet with the systemd cgroup driver expects one');
  }
}

/** Pod networking is not built yet (README): CNI items warn, they do not fail the node. */
function cniPlugins(config: PodvisorConfig): CheckResult {
  const wanted = ['bridge', 'host-local', 'loopback', 'portmap'];
  const found = new Map<string, string>();
  for (const dir of config.cni.binDirs) for (const p of wanted) if (!found.has(p) && existsSync(join(dir, p))) found.set(p, join(dir, p));
  const missing = wanted.filter((p) => !found.has(p));
  if (missing.length === 0) return ok('cni plugins', `${wanted.join(', ')} in ${[...new Set([...found.values()].map((p) => p.slice(0, p.lastIndexOf('/'))))].join(', ')}`);
  return warn('cni plugins', `missing ${missing.join(', ')} in ${config.cni.binDirs.join(', ')} (containernetworking-plugins); pod networking is not built yet, so pods still run with loopback`);
}

function cniConfig(config: PodvisorConfig): CheckResult {
  let files: string[] = [];
  try {
    files = readdirSync(config.cni.confDir).filter((f) => /\.(conf|conflist|json)$/.test(f)).sort();
  } catch {
    // missing directory: same as empty
  }
  return files.length
    ? ok('cni config', `${config.cni.confDir}: ${files.join(', ')} (the first is the pod network)`)
    : warn('cni config', `no network config in ${config.cni.confDir}; pod networking is not built yet, so pods still run with loopback`);
}

function virtiofsd(): CheckResult {
  const path = '/usr/lib/qemu/virtiofsd';
  return existsSync(path)
    ? ok('virtiofsd', `${path} (volumes over virtio-fs)`)
    : warn('virtiofsd', `${path} missing (Debian qemu-system-common): with [volumes] share_mode = "virtiofs" CRI mounts are refused; install it, or set share_mode = "copy"`);
}

function directories(config: PodvisorConfig): CheckResult {
  const notes: string[] = [];
  let worst: CheckStatus = 'ok';
  for (const [what, dir] of [['root', config.root], ['state', config.state]] as const) {
    if (!existsSync(dir)) {
      notes.push(`${what} ${dir} not made yet (podvisord makes it 0700)`);
      continue;
    }
    const mode = statSync(dir).mode & 0o777;
    if (mode & 0o077) {
      worst = 'warn';
      notes.push(`${what} ${dir} is ${mode.toString(8)}: others can read sandbox state; chmod 700`);
    } else notes.push(`${what} ${dir} ${mode.toString(8)}`);
  }
  return { item: 'directories', status: worst, detail: notes.join('; ') };
}

/** The CRI socket: mode 0600 and a daemon that answers. */
export function socketCheck(config: { listen: string }, version: () => Promise<string>): Promise<CheckResult> {
  if (!existsSync(config.listen)) return Promise.resolve(fail('cri socket', `${config.listen} does not exist: start podvisord (systemctl start podvisord)`));
  const mode = statSync(config.listen).mode & 0o777;
  if (mode & 0o077) return Promise.resolve(fail('cri socket', `${config.listen} is ${mode.toString(8)}: anyone who can open it controls the node's pods`));
  return version().then(
    (v) => ok('cri socket', `${config.listen} (0600) answers: ${v}`),
    (e) => fail('cri socket', `${config.listen} does not answer: ${(e as { details?: string }).details ?? messageOf(e)}`),
  );
}

/**
 * Boots a VM with the `kata` handler's profile and the guest image and waits
 * for the agent to answer: the only proof that this accelerator, kernel and
 * image really run a guest (an openable /dev/kvm proves nothing on its own).
 */
export async function bootProbe(config: PodvisorConfig, onStep: (text: string) => void): Promise<CheckResult> {
  const runDir = mkdtempSync(join(tmpdir(), 'podvisor-check-'));
  const started = performance.now();
  let vm: Vm | undefined;
  let agent: AgentClient | undefined;
  try {
    const profile = profileForHandler('kata', config.runtimes);
    onStep('boot probe: starting QEMU…');
    vm = await Vm.launch({
      id: `check-${process.pid}`,
      profile: vmProfileFor(profile, { vcpus: profile.vcpus, memoryMiB: profile.memoryMiB }),
      runDir: join(runDir, 'vm'),
      readyTimeoutMs: 120_000,
      waitReady: async (v, deadline) => {
        onStep('boot probe: QEMU up; waiting for the guest agent…');
        agent = await AgentClient.connect(v.agentSocket, { deadlineMs: Math.max(1000, deadline - Date.now()) });
      },
    });
    const v = await agent!.version();
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    return ok('boot probe', `a ${vm.accel.toUpperCase()} guest booted to the agent in ${seconds} s (kernel ${v.kernelRelease}, agent ${v.agentVersion}, node ${v.nodeVersion}, crun ${v.crunVersion})`);
  } catch (e) {
    return fail('boot probe', `no guest came up: ${messageOf(e)}`);
  } finally {
    agent?.close();
    await vm?.destroy({ timeoutMs: 5000 }).catch(() => undefined);
    rmSync(runDir, { recursive: true, force: true });
  }
}
