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

export function createLibvirtBackend(uri: string): LibvirtBackend {
  const connection = new LibvirtConnection(uri);
  return {
    name: 'libvirt',
    connection,
    check: () => connection.check(),
    launch: (opts) => LibvirtVm.launch(connection, opts),
    reattach: (runDir, opts) => LibvirtVm.reattach(connection, runDir, opts),
    killLeftover: (runDir) => LibvirtVm.killLeftover(connection, runDir),
  };
}
