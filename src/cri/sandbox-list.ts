import type { RuntimeRpc } from './rpc.js';
import { sandboxFilterFromCri, sandboxToCri } from './sandbox-convert.js';

export const listPodSandbox: RuntimeRpc<'ListPodSandbox'> = async (svc, req) => ({
  items: svc.pods.sandboxes.list(sandboxFilterFromCri(req.filter)).map(sandboxToCri),
});
