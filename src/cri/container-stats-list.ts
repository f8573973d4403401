import { containerFilterFromCri } from './container-convert.js';
import { containerStatsToCri } from './container-stats-convert.js';
import type { RuntimeRpc } from './rpc.js';

export const listContainerStats: RuntimeRpc<'ListContainerStats'> = async (svc, req) => ({
  stats: (await svc.pods.stats.listContainerStats(containerFilterFromCri(req.filter))).map(containerStatsToCri),
});
