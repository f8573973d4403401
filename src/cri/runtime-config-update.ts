import type { RuntimeRpc } from './rpc.js';

export const updateRuntimeConfig: RuntimeRpc<'UpdateRuntimeConfig'> = async (svc, req) => {
  svc.runtime.updatePodCidr(req.runtime_config?.network_config?.pod_cidr ?? '');
  return {};
};
