import { Counter, Gauge } from 'prom-client';
import { vmProcessUsage } from '../vm/process-usage.js';
import { registry } from '../metrics/metrics.js';

/** What the collector needs to know about each sandbox at scrape time. */
export interface SandboxSample {
  id: string;
  /** namespace/name */
  pod: string;
  state: 'ready' | 'notready';
  /** QEMU's pid while the VM runs. */
  pid?: number;
}

/**
 * Series read at scrape time from the live sandboxes: counts by state, and
 * each VM's memory and vCPU time from its QEMU process in /proc. Series of
 * removed sandboxes disappear with them.
 */
export function collectSandboxes(source: () => SandboxSample[]): void {
  // One source per process: a second call (a test's second daemon in-process) replaces the first.
  for (const name of ['podvisor_sandboxes', 'podvisor_vm_running', 'podvisor_vm_memory_rss_bytes', 'podvisor_vm_memory_pss_bytes', 'podvisor_vm_vcpu_seconds_total']) {
    registry.removeSingleMetric(name);
  }
  const byState = new Gauge({
    name: 'podvisor_sandboxes',
    help: 'Pod sandboxes known to podvisord, by state (ready, notready)',
    labelNames: ['state'] as const,
    registers: [registry],
    collect() {
      const samples = source();
      this.reset();
      for (const state of ['ready', 'notready'] as const) this.set({ state }, samples.filter((s) => s.state === state).length);
    },
  });
  const labels = ['sandbox', 'pod'] as const;
  // One read of /proc per scrape feeds the per-VM series. prom-client collects in
  // registration order, so this gauge comes first and fills the three below it.
  new Gauge({
    name: 'podvisor_vm_running',
    help: 'Sandbox VMs whose QEMU process is alive',
    registers: [registry],
    collect() {
      rss.reset();
      pss.reset();
      vcpu.reset();
      let running = 0;
      for (const s of source()) {
        if (!s.pid) continue;
        const usage = vmProcessUsage(s.pid);
        if (!usage) continue;
        running++;
        const l = { sandbox: s.id, pod: s.pod };
        rss.set(l, usage.rssBytes);
        pss.set(l, usage.pssBytes);
        if (usage.vcpuSeconds !== null) vcpu.inc(l, usage.vcpuSeconds);
      }
      this.set(running);
    },
  });
  const rss = new Gauge({ name: 'podvisor_vm_memory_rss_bytes', help: "Resident memory of the sandbox VM's QEMU process", labelNames: labels, registers: [registry] });
  const pss = new Gauge({ name: 'podvisor_vm_memory_pss_bytes', help: "Proportional set size of the sandbox VM's QEMU process (shared pages split)", labelNames: labels, registers: [registry] });
  // A counter whose value comes from /proc: reset and set on every scrape.
  const vcpu = new Counter({ name: 'podvisor_vm_vcpu_seconds_total', help: "CPU time of the sandbox VM's vCPU threads", labelNames: labels, registers: [registry] });
  void byState;
}
