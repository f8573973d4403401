import { containerFilterFromCri, containerToCri } from './container-convert.js';
import type { RuntimeRpc } from './rpc.js';

export const listContainers: RuntimeRpc<'ListContainers'> = async (svc, req) => ({
  containers: svc.pods.containers.list(containerFilterFromCri(req.filter)).map(containerToCri),
});
