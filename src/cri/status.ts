import type { RuntimeRpc } from './rpc.js';
import { hostAcceleration } from '../vm/host.js';

export const status: RuntimeRpc<'Status'> = async (svc, req) => {
  const info: Record<string, string> = {};
  if (req.verbose) {
    info.config = JSON.stringify({
      handlers: svc.runtime.handlers,
      runtimes: svc.config.runtimes,
      registryMirrors: Object.keys(svc.config.registry.mirrors),
      podCidr: svc.runtime.currentPodCidr,
      root: svc.config.root,
      state: svc.config.state,
    });
    info.accelerator = JSON.stringify(hostAcceleration());
  }
  return {
    status: { conditions: svc.runtime.conditions() },
    info,
    // Each sandbox is a whole VM, so neither feature depends on the host kernel;
    // podvisor does not implement them yet and says so.
    runtime_handlers: svc.runtime.handlers.map((name) => ({
      name,
      features: { recursive_read_only_mounts: false, user_namespaces: false },
    })),
    features: { supplemental_groups_policy: false },
  };
};
