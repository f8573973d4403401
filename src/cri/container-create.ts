import { containerConfigFromCri } from './container-convert.js';
import { requireId } from './container-require-id.js';
import type { RuntimeRpc } from './rpc.js';

export const createContainer: RuntimeRpc<'CreateContainer'> = async (svc, req) => ({
  container_id: await svc.pods.containers.create(requireId(req.pod_sandbox_id, 'pod_sandbox_id'), containerConfigFromCri(req.config)),
});
