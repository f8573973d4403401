import type { RuntimeRpc } from './rpc.js';
import { CRI_API_VERSION, KUBELET_API_VERSION, PODVISOR_VERSION, RUNTIME_NAME } from '../daemon/runtime-info.js';

export const version: RuntimeRpc<'Version'> = async () => ({
  version: KUBELET_API_VERSION,
  runtime_name: RUNTIME_NAME,
  runtime_version: PODVISOR_VERSION,
  runtime_api_version: CRI_API_VERSION,
});
