import { EventEmitter } from 'node:events';
import { availableParallelism } from 'node:os';
import { failedPrecondition } from '../errors.js';
import { dirname, join } from 'node:path';
import type { RuntimeProfileConfig } from '../config/config.js';
import type { SandboxNetworks } from '../network/sandbox-networks.js';
import type { PodVm, VmBackend, VmBackendName } from '../vm/pod-vm.js';
import { qemuBackend } from '../vm/qemu-backend.js';
import type { VmLaunchOptions } from '../vm/vm.js';
import type { SandboxShare, ShareMode } from '../volume/sandbox-share.js';
import { VmTemplates } from './vm-templates.js';
import type { CriLogWriter } from './cri-log-writer.js';
import { ContainerEventBus } from './events.js';
import type { GuestAgent } from './guest-agent.js';
import type { PodImages } from './images.js';
import { KeyedLock } from './keyed-lock.js';
import { LaunchSlots } from './launch-slots.js';
import { OutputThrottle } from './output-throttle.js';
import { PodIndex } from './pod-index.js';
import type { PluggedImage } from './records.js';
import type { StateStore } from './state-store.js';

/** Connects to the agent of a VM whose port listens at `socketPath`, retrying until `deadline` (ms since epoch). */
export type AgentConnector = (socketPath: string, deadline: number, opts?: { portOpened?: Promise<void> }) => Promise<GuestAgent>;

/** The live parts of a ready sandbox: its QEMU and the agent connection. Not persisted. */
export interface SandboxRuntime {
  vm: PodVm;
  agent: GuestAgent;
  /** Set while podvisor itself stops the VM, so its exit is not taken for a crash. */
  stopping: boolean;
  /** Image disks being plugged or plugged, so concurrent creates share one disk. */
  imagePlugs: Map<string, Promise<PluggedImage>>;
  /** The sandbox's volume share, when it has one. */
  share?: SandboxShare;
}

export interface PodSettings {
  /** Where VM run directories go (`<dir>/<sandboxId>/`: sockets, pidfile, console log). */
  vmRunRoot: string;
  /** Where sandbox volume shares go (`<dir>/<sandboxId>/`); default: `volumes` next to vmRunRoot. */
  shareRoot?: string;
  /** Where VM templates go (`<dir>/<key>/`, best on a tmpfs); default: `templates` next to vmRunRoot. */
  templateRoot?: string;
  /** How every new sandbox's volumes reach its guest (default virtiofs); VM-template clones choose copy themselves. */
  shareMode?: ShareMode;
  runtimes: Record<string, RuntimeProfileConfig>;
  /** How long a VM may take from QEMU start to agent ready. */
  bootTimeoutMs: number;
  /** VM boots at once (QEMU start to agent ready); more RunPodSandbox calls wait their turn. Default: the host's cores. */
  maxParallelLaunches?: number;
  /** How QEMU is confined and its console kept (src/vm); the daemon always sets it. */
  vmLaunch?: Pick<VmLaunchOptions, 'confinement' | 'allowNoSeccomp' | 'consoleMaxBytes'>;
  /** VM backends other than podvisor's own QEMU launcher (which is always there), by name. */
  vmBackends?: Partial<Record<VmBackendName, VmBackend>>;
}

/**
 * State shared by the sandbox, container and stats services: the index and
 * store, per-id locks, the live VMs/agents, the open log writers and the event
 * bus. One instance per daemon.
 */
export class PodContext {
  readonly index = new PodIndex();
  readonly locks = new KeyedLock();
  readonly events = new ContainerEventBus();
  readonly runtimes = new Map<string, SandboxRuntime>();
  readonly logWriters = new Map<string, CriLogWriter>();
  /** Per-sandbox output backpressure shared by that sandbox's log writers. */
  readonly outputThrottles = new Map<string, OutputThrottle>();
  /** Events a guest sent about containers that are not its own (H1), per sandbox: dropped and counted. */
  readonly foreignEvents = new Map<string, number>();
  /** Emits `exited:<containerId>` when a container's record turns EXITED. */
  readonly exits = new EventEmitter();
  /** Bounds how many sandbox VMs boot at once (src/pod/launch-slots.ts). */
  readonly launchSlots: LaunchSlots;
  /** Saved VMs that sandboxes of handlers with `template = true` are cloned from. */
  readonly templates: VmTemplates;

  constructor(
    readonly store: StateStore,
    readonly images: PodImages,
    readonly connectAgent: AgentConnector,
    readonly settings: PodSettings,
    /** Pod networking (netns, CNI, tap); without it every sandbox has loopback only. */
    readonly network?: SandboxNetworks,
  ) {
    this.exits.setMaxListeners(0);
    this.templates = new VmTemplates({
      root: settings.templateRoot ?? join(dirname(settings.vmRunRoot), 'templates'),
      connectAgent,
      bootTimeoutMs: settings.bootTimeoutMs,
      launch: { allowNoSeccomp: settings.vmLaunch?.allowNoSeccomp, consoleMaxBytes: settings.vmLaunch?.consoleMaxBytes },
    });
    this.launchSlots = new LaunchSlots(settings.maxParallelLaunches ?? availableParallelism());
  }

  /** The VM backend by name ("qemu" when unset); one that is not set up is refused, saying so. */
  vmBackend(name: VmBackendName = 'qemu'): VmBackend {
    if (name === 'qemu') return this.settings.vmBackends?.qemu ?? qemuBackend;
    const backend = this.settings.vmBackends?.[name];
    if (!backend) throw failedPrecondition(`the ${name} VM backend is not set up in this podvisord`);
    return backend;
  }

  /** Every backend set up, the default first: recovery asks each about a run directory without a record. */
  allVmBackends(): VmBackend[] {
    const others = Object.values(this.settings.vmBackends ?? {}).filter((b): b is VmBackend => !!b && b.name !== 'qemu');
    return [this.vmBackend('qemu'), ...others];
  }

  outputThrottle(sandboxId: string): OutputThrottle {
    let t = this.outputThrottles.get(sandboxId);
    if (!t) {
      t = new OutputThrottle();
      this.outputThrottles.set(sandboxId, t);
    }
    return t;
  }
}
