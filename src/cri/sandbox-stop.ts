import type { RuntimeRpc } from './rpc.js';
import { requireId } from './container-require-id.js';

export const stopPodSandbox: RuntimeRpc<'StopPodSandbox'> = async (svc, req) => {
  await svc.pods.sandboxes.stop(requireId(req.pod_sandbox_id, 'pod_sandbox_id'));
  return {};
};
