import { nowNanos } from '../pod/clock.js';
import { containerStatusToCri } from './container-convert.js';
import type { RuntimeRpc } from './rpc.js';
import { requireId } from './container-require-id.js';
import { sandboxStatusToCri, sandboxVerboseInfo } from './sandbox-convert.js';

export const podSandboxStatus: RuntimeRpc<'PodSandboxStatus'> = async (svc, req) => {
  const { record, runtime } = svc.pods.sandboxes.status(requireId(req.pod_sandbox_id, 'pod_sandbox_id'));
  return {
    status: sandboxStatusToCri(record),
    info: req.verbose ? sandboxVerboseInfo(record, runtime) : {},
    // Filled for kubelet's evented PLEG, which reads pod and container status in one call.
    containers_statuses: svc.pods.containers.list({ podSandboxId: record.id }).map(containerStatusToCri),
    timestamp: nowNanos(),
  };
};
