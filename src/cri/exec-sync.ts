import { requireId } from './container-require-id.js';
import type { RuntimeRpc } from './rpc.js';
import { int } from './sandbox-convert.js';

export const execSync: RuntimeRpc<'ExecSync'> = async (svc, req) => {
  const res = await svc.pods.containers.execSync(requireId(req.container_id, 'container_id'), req.cmd, Math.max(0, int(req.timeout, 'timeout')));
  return { stdout: res.stdout, stderr: res.stderr, exit_code: res.exitCode };
};
