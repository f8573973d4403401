import { requireId } from './container-require-id.js';
import type { RuntimeRpc } from './rpc.js';

export const removeContainer: RuntimeRpc<'RemoveContainer'> = async (svc, req) => {
  await svc.pods.containers.remove(requireId(req.container_id, 'container_id'));
  return {};
};
