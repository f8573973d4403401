import { requireId } from './container-require-id.js';
import { sandboxStatsToCri } from './container-stats-convert.js';
import type { RuntimeRpc } from './rpc.js';

export const podSandboxStats: RuntimeRpc<'PodSandboxStats'> = async (svc, req) => ({
  stats: sandboxStatsToCri(await svc.pods.stats.sandboxStats(requireId(req.pod_sandbox_id, 'pod_sandbox_id'))),
});
