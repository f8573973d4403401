import type { TapHandoff } from '../network/host-tap.js';
import type { QemuUsers } from './confinement.js';
import type { DiskAddress, HotplugDiskRequest } from './disks.js';
import type { QmpClient } from './qmp-client.js';
import type { VmState, VmStopOptions } from './qmp-vm.js';
import type { TapDevice } from './qemu-args.js';
import type { RunDirPaths } from './run-dir.js';
import type { VmExitInfo } from './vm-exit.js';
import type { VmLaunchOptions } from './vm.js';

/**
 * The contract between the pod layer and a running pod VM, whatever starts it: podvisor's
 * own QEMU launcher (`Vm`, the default) or libvirt (src/vm/libvirt/). Only what
 * src/pod/ needs is here, so a second backend has a small surface to match.
 */
export interface PodVm {
  readonly id: string;
  /** The QEMU process (for usage figures and operators); under libvirt, the pid libvirt reports. */
  readonly pid: number;
  readonly accel: 'kvm' | 'tcg';
  readonly state: VmState;
  /** Where the host side of the agent's virtio-serial port listens. */
  readonly agentSocket: string;
  /** The run directory's files (console log, sockets). */
  readonly paths: RunDirPaths;
  readonly exited: VmExitInfo | undefined;
  /** How long loading a VM template's saved state took (ms); undefined for a cold boot. */
  readonly restoreMs?: number;
  /** A QMP connection to this VM's QEMU, for inspection (admin views). */
  readonly qmp: QmpClient;
  once(event: 'exit', listener: (info: VmExitInfo) => void): this;
  waitExit(): Promise<VmExitInfo>;
  /** Graceful hook, then the backend's own ways to end the VM; idempotent. */
  stop(opts?: VmStopOptions): Promise<VmExitInfo>;
  /** Stops the VM if needed and removes its run directory. */
  destroy(opts?: VmStopOptions): Promise<void>;
  /** Lets go of a running VM without touching it (daemon shutdown); `reattach` finds it again. */
  detach(): void;
  hotplugDisk(req: HotplugDiskRequest): Promise<DiskAddress>;
  unplugDisk(id: string, opts?: { timeoutMs?: number }): Promise<void>;
  disks(): DiskAddress[];
}

/** Launch options as a backend takes them: the readiness hook sees the backend-neutral VM. */
export type PodVmLaunchOptions = Omit<VmLaunchOptions, 'waitReady' | 'tap'> & {
  waitReady?: (vm: PodVm, deadline: number) => Promise<void>;
  /**
   * The pod's tap in `netns`. With `handoff` (backends with `tapInHostNetns`) it does not exist
   * yet: the backend makes it in the host netns, moves it into `netns` as `name` and reports
   * that (or its failure) through `handoff` (src/network/host-tap.ts).
   */
  tap?: TapDevice & { handoff?: TapHandoff };
};

export type VmBackendName = 'qemu' | 'libvirt';

/** How pod VMs are started and found again; one per backend, chosen per runtime handler. */
export interface VmBackend {
  readonly name: VmBackendName;
  /**
   * QEMU runs in the host netns (libvirt): the pod network must not make the tap in the pod
   * netns, the backend brings its own in (PodVmLaunchOptions.tap.handoff).
   */
  readonly tapInHostNetns: boolean;
  launch(opts: PodVmLaunchOptions): Promise<PodVm>;
  /** Finds the VM an earlier podvisord started in `runDir`; NOT_FOUND when it is gone. */
  reattach(runDir: string, opts?: { timeoutMs?: number; users?: QemuUsers }): Promise<PodVm>;
  /** Ends whatever still serves `runDir` when it cannot be reattached; true if something was ended. */
  killLeftover(runDir: string): Promise<boolean>;
}
