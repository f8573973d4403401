import type { QmpClient } from './qmp-client.js';
import type { QmpEvent } from './qmp-types.js';
import { AGENT_PORT_ID } from './qemu-args.js';

/**
 * Resolves when the guest opens the agent's virtio-serial port (QMP VSERPORT_CHANGE). The
 * agent client probes with Health until the agent answers, and a probe sent before the
 * guest listened is lost, with each miss doubling the wait (up to 2 s); told that the port
 * just opened, the client probes again at once instead of waiting out a stale probe.
 * `dispose` stops listening (call it once connected, or if the event never comes).
 */
export function agentPortOpened(qmp: QmpClient): { opened: Promise<void>; dispose(): void } {
  let watch: { dispose(): void } | undefined;
  const opened = new Promise<void>((resolve) => {
    watch = watchAgentPort(qmp, (open) => {
      if (open) resolve();
    });
  });
  return { opened, dispose: () => watch!.dispose() };
}

/**
 * Calls `changed` each time QMP reports the guest opening or closing the agent's port, for the
 * VM's life (after the agent first connected): the agent client then checks its session
 * (AgentClient.portChanged). QEMU sends at most one VSERPORT_CHANGE per second per port, however
 * fast the guest toggles it. `dispose` stops listening (the VM exited).
 */
export function watchAgentPort(qmp: QmpClient, changed: (open: boolean) => void): { dispose(): void } {
  const listener = (ev: QmpEvent) => {
    if (ev.event !== 'VSERPORT_CHANGE') return;
    const data = ev.data as QmpEvent<'VSERPORT_CHANGE'>['data'];
    if (data.id === AGENT_PORT_ID) changed(data.open);
  };
  qmp.on('event', listener);
  return { dispose: () => void qmp.off('event', listener) };
}
