import type { ContainerEvent, ContainerEventType } from '../pod/events.js';
import { containerStatusToCri } from './containers.js';
import type { ContainerEventResponse } from './generated/runtime/v1/ContainerEventResponse.js';
import type { RuntimeRpc } from './rpc.js';
import { sandboxStatusToCri } from './sandboxes.js';

/** The CRI ContainerEventType names. */
const CRI_EVENT_TYPE: Record<ContainerEventType, ContainerEventResponse['container_event_type']> = {
  created: 'CONTAINER_CREATED_EVENT',
  started: 'CONTAINER_STARTED_EVENT',
  stopped: 'CONTAINER_STOPPED_EVENT',
  deleted: 'CONTAINER_DELETED_EVENT',
};

/**
 * GetContainerEvents: one long-lived stream per caller (kubelet's evented
 * PLEG). Each event carries the pod's status and its containers' statuses as
 * they are when the event is sent. The stream ends when the caller goes away
 * or the daemon shuts down.
 */
export const getContainerEvents: RuntimeRpc<'GetContainerEvents'> = async (svc, _req, call) => {
  await new Promise<void>((resolve) => {
    const toResponse = (ev: ContainerEvent): ContainerEventResponse => {
      const sandbox = svc.pods.sandboxes.list({ id: ev.sandboxId })[0];
      return {
        container_id: ev.containerId,
        container_event_type: CRI_EVENT_TYPE[ev.type],
        created_at: ev.createdAt,
        pod_sandbox_status: sandbox ? sandboxStatusToCri(sandbox) : null,
        containers_statuses: sandbox ? svc.pods.containers.list({ podSandboxId: sandbox.id }).map(containerStatusToCri) : [],
      };
    };
    const unsubscribe = svc.pods.events.subscribe((ev) => {
      if (!call.cancelled) call.write(toResponse(ev));
    });
    const finish = () => {
      unsubscribe();
      svc.shutdown.removeEventListener('abort', finish);
      resolve();
    };
    call.once('cancelled', finish);
    call.once('close', finish);
    call.once('error', finish);
    svc.shutdown.addEventListener('abort', finish, { once: true });
    if (svc.shutdown.aborted) finish();
  });
};
