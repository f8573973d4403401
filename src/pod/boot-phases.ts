import { messageOf } from '../errors.js';
import { logger } from '../log.js';
import { bootPhaseSeconds } from '../metrics/metrics.js';
import type { GuestAgent } from './guest-agent.js';

const log = logger('pod-boot');

/** Host times (performance.now() ms) taken while a sandbox VM started. */
export interface BootMarks {
  launchStarted: number;
  /** QEMU answered QMP: the VM exists and the guest starts running. */
  qmpReady: number;
  /** The agent answered its first call. */
  agentReady: number;
}

/**
 * Splits a cold boot into phases for the boot-latency histogram: launch (QEMU
 * start to QMP), kernel (QMP to the agent process starting: kernel, init,
 * modules, disks) and agent_ready (the agent process to its first answer).
 * The split between the last two comes from the guest's own clock (its uptime
 * when the agent started); the host measures their sum.
 */
export async function recordBootPhases(agent: GuestAgent, marks: BootMarks): Promise<Record<string, number>> {
  const launch = (marks.qmpReady - marks.launchStarted) / 1000;
  const guestPart = (marks.agentReady - marks.qmpReady) / 1000;
  let agentReady = 0;
  try {
    const h = await agent.health();
    agentReady = Math.min(guestPart, Math.max(0, h.guestUptimeSeconds - h.agentStartUptimeSeconds));
  } catch (e) {
    log.debug({ err: messageOf(e) }, 'agent health for the boot phases failed; counting the guest part as kernel');
  }
  const phases = { launch, kernel: guestPart - agentReady, agent_ready: agentReady };
  for (const [phase, seconds] of Object.entries(phases)) bootPhaseSeconds.observe({ phase }, seconds);
  return phases;
}

/**
 * A template clone's start-up: launch (QEMU start to QMP, without the restore),
 * template_restore (loading the saved state) and agent_ready (resumed guest to the
 * agent's first answer). No guest clock is asked: the clone's is the template's until
 * renewIdentity, and one call less is what a clone start is about.
 */
export function recordClonePhases(marks: BootMarks, restoreMs: number): Record<string, number> {
  const restore = restoreMs / 1000;
  const phases = {
    launch: Math.max(0, (marks.qmpReady - marks.launchStarted) / 1000 - restore),
    template_restore: restore,
    agent_ready: (marks.agentReady - marks.qmpReady) / 1000,
  };
  for (const [phase, seconds] of Object.entries(phases)) bootPhaseSeconds.observe({ phase }, seconds);
  return phases;
}
