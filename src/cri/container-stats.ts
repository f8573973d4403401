import { requireId } from './container-require-id.js';
import { containerStatsToCri } from './container-stats-convert.js';
import type { RuntimeRpc } from './rpc.js';

export const containerStats: RuntimeRpc<'ContainerStats'> = async (svc, req) => ({
  stats: containerStatsToCri(await svc.pods.stats.containerStats(requireId(req.container_id, 'container_id'))),
});
