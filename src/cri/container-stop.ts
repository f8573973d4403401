import { requireId } from './container-require-id.js';
import type { RuntimeRpc } from './rpc.js';
import { int } from './sandbox-convert.js';

export const stopContainer: RuntimeRpc<'StopContainer'> = async (svc, req) => {
  await svc.pods.containers.stop(requireId(req.container_id, 'container_id'), Math.max(0, int(req.timeout, 'timeout')));
  return {};
};
