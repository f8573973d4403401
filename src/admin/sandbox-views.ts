import { join } from 'node:path';
import { messageOf } from '../errors.js';
import type { OperatorAccess } from '../pod/operator-access.js';
import type { SandboxRecord } from '../pod/records.js';
import { processCommandLine, vmProcessUsage } from '../vm/process-usage.js';

/** One `podvisor ps` row. */
export interface SandboxRow {
  id: string;
  pod: string;
  state: string;
  handler: string;
  qemuPid: number | null;
  accel: string | null;
  vcpus: number | null;
  memoryMiB: number | null;
  /** Seconds since the sandbox was created (while it is ready). */
  uptimeSeconds: number | null;
  /** How the VM started: a "cold" boot, or a clone of a VM "template". */
  boot: 'cold' | 'template';
  containers: number;
}

export function sandboxRows(operator: OperatorAccess): SandboxRow[] {
  return operator.sandboxes()
    .sort((a, b) => (BigInt(b.createdAt) > BigInt(a.createdAt) ? 1 : -1))
    .map((s) => row(operator, s));
}

function row(operator: OperatorAccess, s: SandboxRecord): SandboxRow {
  const live = operator.runtime(s.id);
  return {
    id: s.id,
    pod: `${s.config.metadata.namespace}/${s.config.metadata.name}`,
    state: s.state,
    handler: s.runtimeHandler,
    qemuPid: live ? live.vm.pid : null,
    accel: s.vm?.accelerator ?? null,
    vcpus: s.vm?.vcpus ?? null,
    memoryMiB: s.vm?.memoryMiB ?? null,
    uptimeSeconds: s.state === 'ready' ? Math.max(0, Math.round(Date.now() / 1000 - Number(BigInt(s.createdAt) / 1_000_000_000n))) : null,
    boot: s.vm?.template ? 'template' : 'cold',
    containers: operator.containersOf(s.id).length,
  };
}

/** Everything `podvisor inspect` shows about one sandbox: records, the live VM as QEMU and /proc see it, the agent. */
export async function inspectSandbox(operator: OperatorAccess, query: string): Promise<Record<string, unknown>> {
  const s = operator.findSandbox(query);
  const live = operator.runtime(s.id);
  const runDir = s.vm?.runDir;
  const vm: Record<string, unknown> = { ...(s.vm ?? {}), running: !!live };
  let agent: Record<string, unknown> = { connected: false };
  if (live) {
    vm.pid = live.vm.pid;
    vm.commandLine = processCommandLine(live.vm.pid) ?? null;
    vm.usage = vmProcessUsage(live.vm.pid) ?? null;
    vm.disks = live.vm.disks();
    try {
      vm.qmpStatus = await live.vm.qmp.execute('query-status', undefined, { timeoutMs: 2000 });
    } catch (e) {
      vm.qmpStatus = { error: messageOf(e) };
    }
    try {
      const started = performance.now();
      const h = await live.agent.health();
      agent = { connected: true, healthy: true, roundTripMs: Math.round((performance.now() - started) * 10) / 10, ...h };
    } catch (e) {
      agent = { connected: true, healthy: false, error: messageOf(e) };
    }
  }
  if (runDir) vm.files = { runDir, console: join(runDir, 'console.log'), agentLog: join(runDir, 'agent.log'), qemuLog: join(runDir, 'qemu.log') };
  return {
    ...row(operator, s),
    notReadyReason: s.notReadyReason ?? null,
    createdAt: new Date(Number(BigInt(s.createdAt) / 1_000_000n)).toISOString(),
    config: s.config,
    vm,
    agent,
    network: s.network,
    images: s.images,
    volumes: operator.containersOf(s.id).flatMap((c) => c.config.mounts.map((m) => ({ container: c.config.metadata.name, ...m }))),
    // Copy mode: what the write-back refused of the guest's answers lately (README, Volumes); null without it.
    volumeWriteBackRefusals: live?.share?.writeBackRefusals() ?? null,
    containers: operator.containersOf(s.id).map((c) => ({
      id: c.id,
      name: c.config.metadata.name,
      state: c.state,
      image: c.config.image,
      imageId: c.imageId,
      guestPid: c.guestPid ?? null,
      exitCode: c.exitCode ?? null,
      reason: c.reason ?? null,
      logFile: c.logFile,
    })),
  };
}
