import { sandboxStatsToCri } from './container-stats-convert.js';
import type { RuntimeRpc } from './rpc.js';
import { sandboxFilterFromCri } from './sandbox-convert.js';

export const listPodSandboxStats: RuntimeRpc<'ListPodSandboxStats'> = async (svc, req) => ({
  stats: (await svc.pods.stats.listSandboxStats(sandboxFilterFromCri(req.filter))).map(sandboxStatsToCri),
});
