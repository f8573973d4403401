import { PODVISOR_VERSION, RUNTIME_NAME } from '../version.js';
import type { RuntimeRpc } from './rpc.js';

/**
 * The RuntimeService RPCs about the runtime as a whole: Version, Status,
 * RuntimeConfig and UpdateRuntimeConfig. The state behind them is
 * src/runtime/runtime-info.ts (`svc.runtime`).
 */

/** The CRI API version podvisor serves. */
export const CRI_API_VERSION = 'v1';
/** The kubelet-runtime API version string runtimes report in VersionResponse.version. */
export const KUBELET_API_VERSION = '0.1.0';

export const version: RuntimeRpc<'Version'> = async () => ({
  version: KUBELET_API_VERSION,
  runtime_name: RUNTIME_NAME,
  runtime_version: PODVISOR_VERSION,
  runtime_api_version: CRI_API_VERSION,
});

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
    info.accelerator = JSON.stringify(svc.runtime.accelerator());
  }
  return {
    status: { conditions: svc.runtime.conditions() },
    info,
    // Each sandbox is a whole VM, so the handler features are the guest's: user namespaces are made
    // by crun in the guest; recursive read-only mounts: read-only on every host submount of the share and crun `rro` (via the agent) in the guest.
    runtime_handlers: svc.runtime.handlers.map((name) => ({
      name,
      features: { recursive_read_only_mounts: true, user_namespaces: true },
    })),
    // Merge and Strict are both applied in the guest, and ContainerStatus.user reports the result.
    features: { supplemental_groups_policy: true, user_namespaces_host_network: false },
  };
};

/** Containers run in the guest's own cgroup tree, managed directly (cgroupfs), never by the host's systemd. */
export const runtimeConfig: RuntimeRpc<'RuntimeConfig'> = async () => ({ linux: { cgroup_driver: 'CGROUPFS' } });

export const updateRuntimeConfig: RuntimeRpc<'UpdateRuntimeConfig'> = async (svc, req) => {
  svc.runtime.updatePodCidr(req.runtime_config?.network_config?.pod_cidr ?? '');
  return {};
};
