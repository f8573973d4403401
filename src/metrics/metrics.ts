import { Counter, Histogram, Registry } from 'prom-client';

/**
 * podvisor's Prometheus series: one registry per daemon process, fed by the
 * domain modules where things happen (boot phases, agent calls, pulls, CRI
 * errors, log bytes) and by collectors that read the live VMs at scrape time
 * (see vm-collector.ts). Names follow Prometheus conventions: `podvisor_`
 * prefix, base units (seconds, bytes), `_total` for counters.
 */
export const registry = new Registry();

/** Seconds: a VM boot phase under TCG takes 0.1-10 s; KVM brings launch and kernel under 0.5 s. */
const BOOT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64];
/** Seconds: agent calls are milliseconds, image disks and container starts seconds. */
const RPC_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const PULL_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300];

export const bootPhaseSeconds = new Histogram({
  name: 'podvisor_sandbox_boot_phase_seconds',
  help: 'Sandbox VM start-up by phase: launch (QEMU start to QMP), kernel (QMP to the agent process), agent_ready (agent process to first answer), template_restore (clone restore)',
  labelNames: ['phase'] as const,
  buckets: BOOT_BUCKETS,
  registers: [registry],
});

export const agentRpcSeconds = new Histogram({
  name: 'podvisor_agent_rpc_duration_seconds',
  help: 'Round trip of calls to the guest agent, by method (WaitProcess excluded: it lasts as long as the process)',
  labelNames: ['method'] as const,
  buckets: RPC_BUCKETS,
  registers: [registry],
});

export const imagePullsTotal = new Counter({
  name: 'podvisor_image_pulls_total',
  help: 'Image pulls by result (success, failure)',
  labelNames: ['result'] as const,
  registers: [registry],
});

export const imagePullBytesTotal = new Counter({
  name: 'podvisor_image_pull_bytes_total',
  help: 'Bytes received from registries',
  registers: [registry],
});

export const imagePullSeconds = new Histogram({
  name: 'podvisor_image_pull_duration_seconds',
  help: 'Image pull duration (fetch, verify, unpack, erofs disk), successful pulls',
  buckets: PULL_BUCKETS,
  registers: [registry],
});

export const criErrorsTotal = new Counter({
  name: 'podvisor_cri_errors_total',
  help: 'CRI calls answered with an error, by RPC and gRPC status code name',
  labelNames: ['rpc', 'code'] as const,
  registers: [registry],
});

export const logBytesTotal = new Counter({
  name: 'podvisor_container_log_bytes_total',
  help: 'Container output bytes written to CRI log files, by sandbox',
  labelNames: ['sandbox'] as const,
  registers: [registry],
});

/** Prometheus text exposition of every series. */
export function exposition(): Promise<string> {
  return registry.metrics();
}

export const EXPOSITION_CONTENT_TYPE = registry.contentType;
