import type { QemuUsers } from '../confinement.js';
import type { VmBackend } from '../pod-vm.js';
import { LibvirtConnection } from './binding.js';
import { LibvirtVm } from './libvirt-vm.js';

/**
 * The libvirt backend for the runtime handlers that ask for it (`backend = "libvirt"`).
 * `check()` connects once at daemon start, so a missing binding or libvirtd is reported
 * then, not at the first RunPodSandbox.
 */
export interface LibvirtBackend extends VmBackend {
  readonly connection: LibvirtConnection;
  check(): Promise<void>;
}

/**
 * `users` is the daemon's one uid allocator (shared with the QEMU backend): a reattached
 * domain's uid is taken again in it, so no new VM of either backend gets it while it runs.
 */
export function createLibvirtBackend(uri: string, users?: QemuUsers): LibvirtBackend {
  const connection = new LibvirtConnection(uri);
  return {
    name: 'libvirt',
    // libvirtd opens the tap in its own (the host's) netns; LibvirtVm.launch moves it into the pod's.
    tapInHostNetns: true,
    connection,
    check: () => connection.check(),
    launch: (opts) => LibvirtVm.launch(connection, opts),
    reattach: (runDir, opts) => LibvirtVm.reattach(connection, runDir, { ...opts, users: opts?.users ?? users }),
    killLeftover: (runDir) => LibvirtVm.killLeftover(connection, runDir),
  };
}
