import { containerStatusToCri } from './container-convert.js';
import { requireId } from './container-require-id.js';
import type { RuntimeRpc } from './rpc.js';

export const containerStatus: RuntimeRpc<'ContainerStatus'> = async (svc, req) => {
  const record = svc.pods.containers.status(requireId(req.container_id, 'container_id'));
  return {
    status: containerStatusToCri(record),
    info: (req.verbose ? { info: JSON.stringify({ sandboxId: record.sandboxId, guestPid: record.guestPid, config: record.config }) } : {}) as Record<string, string>,
  };
};
