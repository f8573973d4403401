/**
 * The baseline every start-up figure is compared with: a bare QEMU boot of the guest image,
 * outside podvisord (no CRI, no CNI, no share, no confinement).
 *  - to /init: the kernel command line carries `podvisor.bare=1`, so /init prints its marker
 *    and powers off at once; the host measures launch until QEMU exits, the guest says when
 *    it reached /init (its own uptime).
 *  - to agent-ready: Vm.launch until the agent answers its first call.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { AgentClient } from '../src/agent-client/index.js';
import { loadConfig } from '../src/config/config.js';
import { sizePodVm, vmProfileFor } from '../src/pod/vm-sizing.js';
import { agentPortOpened } from '../src/vm/agent-port.js';
import type { VmProfile } from '../src/vm/profile.js';
import { Vm } from '../src/vm/vm.js';

export interface BareInitBoot {
  /** Host ms from launch until QEMU exited after /init powered off. */
  ms: number;
  /** Guest uptime (s) when /init ran. */
  initAt?: number;
}

export interface AgentReadyBoot {
  /** Host ms from launch until the agent answered. */
  ms: number;
  /** Guest uptime (s) when the agent answered Health. */
  guestUptime: number;
  initAt?: number;
}

/** Seconds of guest uptime printed by /init's marker line. */
export function initMarker(consoleLog: string): number | undefined {
  const m = /podvisor-init: reached \/init at ([\d.]+)s/.exec(consoleLog);
  return m ? Number(m[1]) : undefined;
}

/** The VM profile a default sandbox gets (handler "", default config, no pod resources). */
export function defaultPodProfile(): VmProfile {
  const profile = loadConfig(undefined).runtimes['']!;
  return vmProfileFor(profile, sizePodVm(profile));
}

function withArgs(profile: VmProfile, extra: string[]): VmProfile {
  return { ...profile, kernelArgs: [...profile.kernelArgs, ...extra] };
}

export async function bareBootToInit(profile: VmProfile, tag: string): Promise<BareInitBoot> {
  const runDir = mkdtempSync('/tmp/pvb-bare-');
  const t = performance.now();
  const vm = await Vm.launch({ id: `bench-bare-${process.pid}-${tag}`, runDir, profile: withArgs(profile, ['podvisor.bare=1']) });
  try {
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('bare boot did not power off in 120 s')), 120_000).unref());
    const info = await Promise.race([vm.waitExit(), timeout]);
    const ms = performance.now() - t;
    if (info.reason !== 'guest-shutdown') throw new Error(`bare boot ended with ${info.reason}: ${info.detail}`);
    return { ms, initAt: initMarker(readFileSync(vm.paths.consoleLog, 'utf8')) };
  } finally {
    await vm.destroy({ timeoutMs: 5000 }).catch(() => undefined);
    rmSync(runDir, { recursive: true, force: true });
  }
}

export async function bootToAgentReady(profile: VmProfile, tag: string): Promise<AgentReadyBoot> {
  const runDir = mkdtempSync('/tmp/pvb-ready-');
  const t = performance.now();
  let agent: AgentClient | undefined;
  const vm = await Vm.launch({
    id: `bench-ready-${process.pid}-${tag}`, runDir, profile, readyTimeoutMs: 180_000,
    waitReady: async (v, deadline) => {
      // As podvisord connects (src/pod/sandbox-service.ts), so the baseline has the same probing.
      const port = agentPortOpened(v.qmp);
      agent = await AgentClient.connect(v.agentSocket, { deadlineMs: deadline - Date.now(), portOpened: port.opened }).finally(() => port.dispose());
    },
  });
  try {
    const ms = performance.now() - t;
    const health = await agent!.health();
    return { ms, guestUptime: health.uptimeSeconds, initAt: initMarker(readFileSync(vm.paths.consoleLog, 'utf8')) };
  } finally {
    await vm.destroy({ graceful: async () => agent?.shutdown(), timeoutMs: 10_000 }).catch(() => undefined);
    agent?.close();
    rmSync(runDir, { recursive: true, force: true });
  }
}
