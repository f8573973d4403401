import type { RuntimeRpc } from './rpc.js';
import { sandboxConfigFromCri } from './sandbox-convert.js';

export const runPodSandbox: RuntimeRpc<'RunPodSandbox'> = async (svc, req) => ({
  pod_sandbox_id: await svc.pods.sandboxes.run(sandboxConfigFromCri(req.config), req.runtime_handler),
});
