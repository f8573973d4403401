import { failedPrecondition, messageOf, unavailable } from '../errors.js';
import { logger } from '../log.js';
import { filterContainers, filterSandboxes, type ContainerFilter, type SandboxFilter } from './filters.js';
import type { GuestContainerStats, GuestStats } from './guest-agent.js';
import type { PodContext } from './pod-context.js';
import type { ContainerRecord, SandboxRecord } from './records.js';

const log = logger('pod-stats');

export interface ContainerStatsView {
  container: ContainerRecord;
  stats: GuestContainerStats;
  /** CPU use since the previous sample, in nanocores; undefined on the first sample. */
  usageNanoCores?: number;
}

export interface SandboxStatsView {
  sandbox: SandboxRecord;
  guest: GuestStats;
  usageNanoCores?: number;
  containers: ContainerStatsView[];
}

/**
 * Numbers from the guest's cgroups, read by the agent. kubelet wants a CPU
 * rate (usage_nano_cores) next to the cumulative counter; it is the slope
 * between this sample and the previous one of the same container or pod.
 */
export class StatsService {
  private readonly lastCpu = new Map<string, { atMs: number; usage: bigint }>();

  constructor(
    private readonly ctx: PodContext,
    private readonly guestDeadlineMs = STATS_DEADLINE_MS,
    private readonly oneGuestDeadlineMs = ONE_GUEST_DEADLINE_MS,
  ) {}

  /** CPU samples kept for rates; entries of removed containers and sandboxes are dropped (L11). */
  get trackedSamples(): number {
    return this.lastCpu.size;
  }

  private prune(): void {
    for (const key of this.lastCpu.keys()) {
      const alive = key.startsWith('pod:') ? this.ctx.index.findSandbox(key.slice(4))?.id === key.slice(4) : this.ctx.index.containerById(key) !== undefined;
      if (!alive) this.lastCpu.delete(key);
    }
  }

  private rate(key: string, atMs: number, usage: bigint): number | undefined {
    const prev = this.lastCpu.get(key);
    this.lastCpu.set(key, { atMs, usage });
    if (!prev || atMs <= prev.atMs || usage < prev.usage) return undefined;
    return Math.round(Number(usage - prev.usage) / ((atMs - prev.atMs) / 1000));
  }

  async containerStats(query: string): Promise<ContainerStatsView> {
    const c = this.ctx.index.container(query);
    if (c.state !== 'running') throw failedPrecondition(`container ${c.id} is ${c.state.toUpperCase()}; stats exist only for running containers`);
    const [view] = await this.statsFor([c], this.oneGuestDeadlineMs);
    if (!view) throw unavailable(`no stats for container ${c.id}: its pod's guest did not answer within ${this.oneGuestDeadlineMs} ms, or has no cgroup for it`);
    return view;
  }

  async listContainerStats(filter: ContainerFilter): Promise<ContainerStatsView[]> {
    return this.statsFor(filterContainers(this.ctx.index, filter).filter((c) => c.state === 'running'));
  }

  private async statsFor(list: ContainerRecord[], deadlineMs = this.guestDeadlineMs): Promise<ContainerStatsView[]> {
    const bySandbox = new Map<string, ContainerRecord[]>();
    for (const c of list) bySandbox.set(c.sandboxId, [...(bySandbox.get(c.sandboxId) ?? []), c]);
    const out: ContainerStatsView[] = [];
    this.prune();
    await Promise.all([...bySandbox].map(async ([sandboxId, cs]) => {
      const rt = this.ctx.runtimes.get(sandboxId);
      if (!rt) return;
      // One guest that is slow or silent must not hold every pod's stats (M4): past the
      // deadline its containers are left out of this answer, as containers without stats are.
      const stats = await withDeadline(rt.agent.containerStats(cs.map((c) => c.id)), deadlineMs);
      if (!stats) return;
      for (const c of cs) {
        const s = stats.get(c.id);
        if (s) out.push({ container: c, stats: s, usageNanoCores: this.rate(c.id, s.timestampMs, s.cpuUsageNanos) });
      }
    }));
    return out.sort((a, b) => (a.container.createdAt < b.container.createdAt ? -1 : 1));
  }

  async sandboxStats(query: string): Promise<SandboxStatsView> {
    const s = this.ctx.index.sandbox(query);
    if (s.state !== 'ready' || !this.ctx.runtimes.has(s.id)) {
      throw failedPrecondition(`sandbox ${s.id} is not ready; stats exist only for running pods`);
    }
    const [view] = await this.sandboxStatsFor([s], this.oneGuestDeadlineMs);
    // A guest that misses the deadline gives no sample (list calls drop it); here that is an answer too.
    if (!view) throw unavailable(`the guest of sandbox ${s.id} did not report its stats within ${this.oneGuestDeadlineMs} ms`);
    return view;
  }

  async listSandboxStats(filter: SandboxFilter): Promise<SandboxStatsView[]> {
    return this.sandboxStatsFor(filterSandboxes(this.ctx.index, filter).filter((s) => s.state === 'ready'));
  }

  private async sandboxStatsFor(list: SandboxRecord[], deadlineMs = this.guestDeadlineMs): Promise<SandboxStatsView[]> {
    const views = await Promise.all(list.map(async (sandbox): Promise<SandboxStatsView | undefined> => {
      const rt = this.ctx.runtimes.get(sandbox.id);
      if (!rt) return undefined;
      // The pod's numbers are its guest cgroup's (as kubelet reads a pod cgroup on a host), not a sum:
      // pressure averages do not add up, and exec'd processes count too.
      const [containers, guest] = await Promise.all([
        this.statsFor(this.ctx.index.containersOf(sandbox.id).filter((c) => c.state === 'running'), deadlineMs),
        withDeadline(rt.agent.sandboxStats(), deadlineMs),
      ]);
      if (!guest) return undefined;
      return { sandbox, guest, usageNanoCores: this.rate(`pod:${sandbox.id}`, guest.timestampMs, guest.cpuUsageNanos), containers };
    }));
    return views.filter((v): v is SandboxStatsView => v !== undefined);
  }
}

/** How long stats wait for one sandbox's guest (kubelet polls every 10-15 s; a late sample is dropped). */
export const STATS_DEADLINE_MS = 2_000;
/**
 * A call about one container or one pod waits for that guest alone, so the node-wide bound above
 * (M4) is not needed there: a guest emulated on a busy host often takes more than 2 s, and
 * answering "no stats" for a healthy pod is wrong. Still bounded, below kubelet's 2-minute call timeout.
 */
const ONE_GUEST_DEADLINE_MS = 10_000;

function withDeadline<T>(work: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), ms); });
  return Promise.race([work.catch(() => undefined), late]).finally(() => clearTimeout(timer));
}
