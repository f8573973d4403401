import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { failedPrecondition, messageOf } from '../errors.js';
import { logger } from '../log.js';
import { withDeadline } from '../vm/deadline.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { findPlugins, loadCniNetwork, type CniConfigState, type CniNetwork, type CniNetworkList } from './cni-config.js';
import { cniAdd, cniCheck, cniDel, versionAtLeast040, type CniAttachment } from './cni-invoke.js';
import { parseCniResult, type PodAttachment } from './cni-result.js';
import { createNetns, inNetns, isNetnsMounted, removeNetns } from './netns.js';
import { cniArgs, runtimeConfigFor, type PodNetworkRequest } from './pod-runtime-config.js';
import { TapHandoff } from './host-tap.js';
import { createTap, disconnectTap, redirectTap, TAP_NAME } from './tap-redirect.js';

const log = logger('network');

/** The interface name CNI plugins create in the pod netns, as kubelet-era runtimes use. */
const POD_IFNAME = 'eth0';
/** How long CNI's redirects wait for a VM backend to move the tap into the pod netns (host-tap.ts). */
const TAP_HANDOFF_MS = 120_000;
const LOOPBACK_NETWORK: CniNetworkList = { cniVersion: '1.0.0', name: 'cni-loopback', plugins: [{ type: 'loopback' }] };

export interface NetworkSettings {
  /** `[cni] conf_dir`: the first valid network config there is the pod network. */
  confDir: string;
  /** `[cni] bin_dirs`: where plugin executables are looked up, in order. */
  binDirs: string[];
  /** Namespace files, one per sandbox (under the daemon's state dir). */
  netnsDir: string;
  /** Write-ahead records of each attachment and its result, so DEL works after a crash or restart (under the root dir). */
  cacheDir: string;
  /** The node's pod CIDR as kubelet last sent it. */
  podCidr: () => string;
}

/**
 * Made before the VM: the namespace QEMU starts in and the tap its NIC sits on (MAC: QEMU's,
 * until the guest takes the CNI one). With `handoff` the tap is not there yet: the VM backend
 * makes it in the host netns, and reports through `handoff` once it moved it into `netns` as `name`.
 */
export interface PreparedNetwork {
  sandboxId: string;
  netns: string;
  tap: { name: string; mac: string; handoff?: TapHandoff };
  network: CniNetwork;
}

/** After CNI ADD: what the guest configures. `attachment.mac` is the CNI interface's MAC, which the guest NIC takes over. */
export interface SandboxNetwork {
  networkName: string;
  netns: string;
  tap: { name: string; mac: string };
  mtu: number;
  attachment: PodAttachment;
}

/** On disk per sandbox: written before ADD (without result), again after it (with). */
interface AttachmentRecord {
  network: CniNetworkList;
  attachment: CniAttachment;
  result?: unknown;
}

/**
 * Pod networking for sandboxes: a namespace per sandbox, the CNI network
 * attached in it, and the tap the VM's NIC sits on. Every step can be undone
 * by `release`, whatever state a failure or a crash left.
 */
export class SandboxNetworks {
  constructor(private readonly settings: NetworkSettings) {}

  /** Re-reads the config folder: NetworkReady and the next RunPodSandbox follow what is there now. */
  state(): CniConfigState {
    return loadCniNetwork(this.settings.confDir, this.settings.binDirs);
  }

  get dirs(): { netnsDir: string; cacheDir: string } {
    return { netnsDir: this.settings.netnsDir, cacheDir: this.settings.cacheDir };
  }

  netnsPath(sandboxId: string): string {
    return join(this.settings.netnsDir, sandboxId);
  }

  private cachePath(sandboxId: string): string {
    return join(this.settings.cacheDir, `${sandboxId}.json`);
  }

  /**
   * The part QEMU needs at launch: namespace and tap. `undefined` when the
   * node has no CNI config at all (the pod gets loopback only, and Status says
   * NetworkReady false); a config that exists but is broken fails the sandbox.
   * The config read here is the one `attach` uses. On any failure of this or
   * `attach` the caller runs `release`, which undoes whatever part was made.
   */
  async prepare(sandboxId: string, opts: { vmMovesTapIn?: boolean } = {}): Promise<PreparedNetwork | undefined> {
    const state = this.state();
    if (!state.ready) {
      if (state.present) throw failedPrecondition(`pod network not ready: ${state.message}`);
      return undefined;
    }
    const netns = this.netnsPath(sandboxId);
    await createNetns(netns);
    // A backend that opens the tap in the host netns (libvirt) brings it in itself, so the name must be free.
    const tap = opts.vmMovesTapIn ? { name: TAP_NAME, handoff: new TapHandoff() } : { name: await createTap(netns) };
    return { sandboxId, netns, tap: { ...tap, mac: randomLocalMac() }, network: state.network };
  }

  /** Loopback, CNI ADD on eth0 and the tap redirects: runs while the VM boots. */
  async attach(prepared: PreparedNetwork, req: PodNetworkRequest): Promise<SandboxNetwork> {
    const { list, binaries } = prepared.network;
    const { netns, sandboxId } = prepared;
    await this.loopbackUp(sandboxId, netns);
    const attachment: CniAttachment = {
      containerId: sandboxId, netns, ifName: POD_IFNAME, args: cniArgs(req), runtimeConfig: runtimeConfigFor(req, this.settings.podCidr()),
    };
    await mkdir(this.settings.cacheDir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(this.cachePath(sandboxId), JSON.stringify({ network: list, attachment } satisfies AttachmentRecord));
    const result = await cniAdd(list, binaries, this.settings.binDirs, attachment);
    await writeFileAtomic(this.cachePath(sandboxId), JSON.stringify({ network: list, attachment, result } satisfies AttachmentRecord));
    const parsed = parseCniResult(result, POD_IFNAME, netns);
    if (prepared.tap.handoff) {
      await withDeadline(prepared.tap.handoff.placed, TAP_HANDOFF_MS, `the VM's tap did not reach the pod netns within ${TAP_HANDOFF_MS / 1000} s`);
    }
    const link = await redirectTap(netns, POD_IFNAME);
    if (link.mac !== parsed.mac) log.warn({ sandbox: sandboxId, result: parsed.mac, link: link.mac }, 'CNI result MAC differs from the interface; using the interface');
    log.info({ sandbox: sandboxId, network: list.name, ips: parsed.addresses.map((a) => a.cidr) }, 'pod network attached');
    return { networkName: list.name, netns, tap: prepared.tap, mtu: link.mtu, attachment: { ...parsed, mac: link.mac } };
  }

  /** `prepare` and `attach` in one (no VM in between). */
  async setup(req: PodNetworkRequest): Promise<SandboxNetwork | undefined> {
    const prepared = await this.prepare(req.sandboxId);
    return prepared && this.attach(prepared, req);
  }

  /**
   * Loopback up in the netns, with the `loopback` plugin as a network of its
   * own on `lo` (as containerd does) when bin_dirs has it, else with ip. The
   * pod's processes use the guest's own lo; plugins and tools in the netns use this one.
   */
  private async loopbackUp(sandboxId: string, netns: string): Promise<void> {
    try {
      const binaries = findPlugins(LOOPBACK_NETWORK, this.settings.binDirs);
      await cniAdd(LOOPBACK_NETWORK, binaries, this.settings.binDirs, { containerId: sandboxId, netns, ifName: 'lo', args: '', runtimeConfig: {} });
    } catch (e) {
      if (!/not an executable/.test(messageOf(e))) throw e;
      await inNetns(netns, 'ip', ['link', 'set', 'lo', 'up'], 'bringing loopback up');
    }
  }

  /**
   * CNI DEL with the config and result kept at ADD time (so a config changed
   * since, or a restarted daemon, deletes what was really added). Idempotent:
   * once DEL succeeded the record is gone and a second call does nothing.
   */
  async detach(sandboxId: string): Promise<void> {
    const rec = await this.readRecord(sandboxId);
    if (!rec) return;
    const { network, attachment, result } = rec;
    // The tap first: nothing should still forward into a half-deleted veth.
    if (isNetnsMounted(attachment.netns)) await disconnectTap(attachment.netns);
    else attachment.netns = ''; // spec: DEL with an empty netns when it is gone, plugins still free IPAM and rules
    await cniDel(network, this.pluginsOf(network), this.settings.binDirs, attachment, result);
    await rm(this.cachePath(sandboxId), { force: true });
    log.info({ sandbox: sandboxId, network: network.name }, 'pod network detached');
  }

  /** DEL if still attached, then the namespace itself. */
  async release(sandboxId: string): Promise<void> {
    await this.detach(sandboxId);
    await removeNetns(this.netnsPath(sandboxId));
  }

  /** CNI CHECK of an attached sandbox (spec 0.4.0 and later, unless the config disables it). */
  async check(sandboxId: string): Promise<'checked' | 'unsupported' | 'detached'> {
    const rec = await this.readRecord(sandboxId);
    if (!rec?.result) return 'detached';
    if (!versionAtLeast040(rec.network.cniVersion) || rec.network.disableCheck) return 'unsupported';
    await cniCheck(rec.network, this.pluginsOf(rec.network), this.settings.binDirs, rec.attachment, rec.result);
    return 'checked';
  }

  /** The plugins of a network that was attached earlier; gone from bin_dirs since is an operator's problem to fix. */
  private pluginsOf(network: CniNetworkList): Record<string, string> {
    try {
      return findPlugins(network, this.settings.binDirs);
    } catch (e) {
      throw failedPrecondition(`cannot run network "${network.name}" again: ${messageOf(e)}`);
    }
  }

  private async readRecord(sandboxId: string): Promise<AttachmentRecord | undefined> {
    let text: string;
    try {
      text = await readFile(this.cachePath(sandboxId), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    try {
      return JSON.parse(text) as AttachmentRecord;
    } catch (e) {
      // Written atomically, so this is damage from outside: nothing can be deleted from it.
      log.error({ sandbox: sandboxId, err: messageOf(e) }, 'unreadable CNI attachment record; removing it');
      await rm(this.cachePath(sandboxId), { force: true });
      return undefined;
    }
  }
}

/** A locally administered unicast MAC for QEMU's NIC until the guest takes the CNI interface's. */
function randomLocalMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
