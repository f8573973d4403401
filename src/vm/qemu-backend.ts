import type { VmBackend } from './pod-vm.js';
import { Vm } from './vm.js';

/** podvisor's own QEMU launcher (src/vm/vm.ts) as a pod VM backend: the default. */
export const qemuBackend: VmBackend = {
  name: 'qemu',
  launch: (opts) => Vm.launch(opts),
  reattach: (runDir, opts) => Vm.reattach(runDir, opts),
  killLeftover: (runDir) => Vm.killLeftover(runDir),
};
