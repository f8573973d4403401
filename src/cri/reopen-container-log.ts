import { requireId } from './container-require-id.js';
import type { RuntimeRpc } from './rpc.js';

export const reopenContainerLog: RuntimeRpc<'ReopenContainerLog'> = async (svc, req) => {
  await svc.pods.containers.reopenLog(requireId(req.container_id, 'container_id'));
  return {};
};
