import type { RuntimeRpc } from './rpc.js';
import { requireId } from './container-require-id.js';

export const removePodSandbox: RuntimeRpc<'RemovePodSandbox'> = async (svc, req) => {
  await svc.pods.sandboxes.remove(requireId(req.pod_sandbox_id, 'pod_sandbox_id'));
  return {};
};
