import type { PodvisorConfig } from '../config/config.js';
import { observeAgentCalls } from '../agent-client/client.js';
import { startAdminServer } from '../admin/admin-server.js';
import { DebugConsoles } from '../debug/console-sessions.js';
import { startSshGateway } from '../debug/ssh-gateway.js';
import { agentRpcSeconds } from '../metrics/metrics.js';
import { collectSandboxes } from './metrics-collector.js';
import { startMetricsServer } from '../metrics/server.js';
import type { PodServices } from '../pod/pod-services.js';

/**
 * What podvisord serves besides the CRI: the admin socket for the podvisor
 * CLI (always), Prometheus /metrics (when `[metrics] listen` is set) and the
 * SSH debug gateway (when `[debug] enabled` and `ssh_listen` are set).
 */
export async function startOperatorTools(config: PodvisorConfig, pods: PodServices): Promise<{ close(): Promise<void> }> {
  const closers: Array<() => Promise<void>> = [];
  // WaitProcess lasts as long as the process it waits for: not a latency.
  observeAgentCalls((method, seconds) => {
    if (method !== 'WaitProcess') agentRpcSeconds.observe({ method }, seconds);
  });
  collectSandboxes(() => pods.operator.sandboxes().map((s) => ({
    id: s.id,
    pod: `${s.config.metadata.namespace}/${s.config.metadata.name}`,
    state: s.state,
    ...(pods.operator.runtime(s.id) ? { pid: pods.operator.runtime(s.id)!.vm.pid } : {}),
  })));
  const consoles = new DebugConsoles(config.debug.enabled, pods.operator);
  try {
    closers.push((await startAdminServer(config.adminListen, { operator: pods.operator, consoles })).close);
    if (config.metrics.listen) closers.push((await startMetricsServer(config.metrics.listen)).close);
    if (config.debug.enabled && config.debug.sshListen) {
      closers.push((await startSshGateway({
        listen: config.debug.sshListen,
        authorizedKeysFile: config.debug.authorizedKeysFile,
        hostKeyFile: config.debug.hostKeyFile,
        consoles,
      })).close);
    }
  } catch (e) {
    for (const close of closers.reverse()) await close().catch(() => undefined);
    throw e;
  }
  return {
    async close() {
      for (const close of closers.reverse()) await close().catch(() => undefined);
    },
  };
}
