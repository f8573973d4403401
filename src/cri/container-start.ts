import { requireId } from './container-require-id.js';
import type { RuntimeRpc } from './rpc.js';

export const startContainer: RuntimeRpc<'StartContainer'> = async (svc, req) => {
  await svc.pods.containers.start(requireId(req.container_id, 'container_id'));
  return {};
};
