/**
 * The memory knobs of an idle pod VM, each measured against the same VM without it, in one
 * run: boot the pod VM profile to agent-ready (Vm.launch, as the daemon does, one VM at a
 * time), let it idle, then read its PSS split (bench/sandbox-memory.ts). The boot time is the
 * price side: a smaller TCG translation cache re-translates more, which shows in the boot.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { AgentClient } from '../src/agent-client/index.js';
import type { VmProfile } from '../src/vm/profile.js';
import { Vm } from '../src/vm/vm.js';
import { median } from './agent-channel.js';
import { measureSandboxes, type MemoryBreakdown } from './sandbox-memory.js';

export interface KnobVariant {
  name: string;
  change: Partial<VmProfile>;
}

export interface KnobResult {
  name: string;
  bootMs: number;
  memory: MemoryBreakdown;
}

async function bootIdle(profile: VmProfile, tag: string, settleMs: number): Promise<{ bootMs: number; memory: MemoryBreakdown }> {
  const runDir = mkdtempSync('/tmp/pvb-knob-');
  const id = `bench-knob-${process.pid}-${tag}`;
  let agent: AgentClient | undefined;
  const t = performance.now();
  const vm = await Vm.launch({
    id, runDir, profile, readyTimeoutMs: 300_000,
    waitReady: async (v, deadline) => {
      agent = await AgentClient.connect(v.agentSocket, { deadlineMs: deadline - Date.now() });
    },
  });
  try {
    const bootMs = performance.now() - t;
    await new Promise((r) => setTimeout(r, settleMs));
    return { bootMs, memory: measureSandboxes([id])[0]! };
  } finally {
    await vm.destroy({ graceful: async () => agent?.shutdown(), timeoutMs: 10_000 }).catch(() => undefined);
    agent?.close();
    rmSync(runDir, { recursive: true, force: true });
  }
}

/** Boots every variant `boots` times, interleaved so that load from elsewhere hits them alike; medians. */
export async function measureKnobs(base: VmProfile, variants: KnobVariant[], opts: { boots: number; settleMs: number; log?: (line: string) => void }): Promise<KnobResult[]> {
  const runs = new Map<string, Array<{ bootMs: number; memory: MemoryBreakdown }>>();
  for (let i = 0; i < opts.boots; i++) {
    for (const v of variants) {
      const r = await bootIdle({ ...base, ...v.change }, `${i}-${v.name.replace(/[^A-Za-z0-9]/g, '')}`, opts.settleMs);
      runs.set(v.name, [...(runs.get(v.name) ?? []), r]);
      opts.log?.(`  ${v.name}: boot ${(r.bootMs / 1000).toFixed(2)} s, PSS ${(r.memory.total / 2 ** 20).toFixed(1)} MiB (guest RAM ${(r.memory.guestRam / 2 ** 20).toFixed(1)}, TCG ${(r.memory.tcg / 2 ** 20).toFixed(1)}, rest ${(r.memory.rest / 2 ** 20).toFixed(1)})`);
    }
  }
  return variants.map((v) => {
    const rs = runs.get(v.name)!;
    const med = (f: (m: MemoryBreakdown) => number) => median(rs.map((r) => f(r.memory)));
    return {
      name: v.name,
      bootMs: median(rs.map((r) => r.bootMs)),
      memory: { total: med((m) => m.total), guestRam: med((m) => m.guestRam), tcg: med((m) => m.tcg), rest: med((m) => m.rest), templateShare: 0 },
    };
  });
}
