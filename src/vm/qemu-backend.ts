import { invalidArgument } from '../errors.js';
import type { VmBackend } from './pod-vm.js';
import { Vm } from './vm.js';

/**
 * podvisor's own QEMU launcher (src/vm/vm.ts) as a pod VM backend: the default. `Vm` does not
 * name PodVm itself (pod-vm.ts takes its option types from vm.ts; the other way would be an
 * import cycle): the typing of `launch` and `reattach` below is where Vm is checked against it.
 */
export const qemuBackend: VmBackend = {
  name: 'qemu',
  // QEMU starts inside the pod netns, on the tap the pod network made there.
  tapInHostNetns: false,
  launch: async (opts) => {
    if (opts.tap?.handoff) throw invalidArgument('the qemu VM backend opens the tap inside the pod netns; it takes no tap handoff');
    return Vm.launch(opts);
  },
  reattach: (runDir, opts) => Vm.reattach(runDir, opts),
  killLeftover: (runDir) => Vm.killLeftover(runDir),
};
