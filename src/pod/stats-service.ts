import { failedPrecondition, messageOf, unavailable } from '../errors.js';
import { logger } from '../log.js';
import { filterContainers, filterSandboxes, type ContainerFilter, type SandboxFilter } from './filters.js';
import type { GuestContainerStats, GuestStats } from './guest-agent.js';
import type { PodContext } from './pod-context.js';
import type { ContainerRecord, SandboxRecord } from './records.js';

const log = logger('pod-stats');

export interface ContainerStatsView {
  container: ContainerRecord;
  /** undefined: the guest has not yet given a sample of this container (it is listed with no usage). */
  stats?: GuestContainerStats;
  /** CPU use since the previous sample, in nanocores; undefined on the first sample. */
  usageNanoCores?: number;
  /** The guest missed this call's deadline: `stats` is its last sample, taken at `stats.timestampMs`. */
  stale?: boolean;
}

export interface SandboxStatsView {
  sandbox: SandboxRecord;
  /** undefined: the guest has not yet given a sample of its pod cgroup. */
  guest?: GuestStats;
  usageNanoCores?: number;
  stale?: boolean;
  containers: ContainerStatsView[];
}

interface Sample<T> {
  stats: T;
  usageNanoCores?: number;
}

/**
 * Numbers from the guest's cgroups, read by the agent. kubelet wants a CPU
 * rate (usage_nano_cores) next to the cumulative counter; it is the slope
 * between this sample and the previous one of the same container or pod.
 *
 * A list (kubelet's summary, every 10-15 s) waits for each guest at most the
 * short list deadline, so one slow or silent guest cannot hold the node's
 * stats (M4). A guest that misses it is answered for with its last sample,
 * whose timestamps say how old it is; a container or pod it never sampled is
 * listed with no usage, as CRI allows, rather than left out (a running
 * container missing from the list reads as gone; critest checks for it).
 * Each guest has at most one stats request of each kind in flight, so calls
 * arriving while a guest is slow share it instead of piling up more.
 */
export class StatsService {
  /** The last sample of each container (by id) and pod (`pod:<id>`). */
  private readonly latest = new Map<string, Sample<GuestContainerStats | GuestStats>>();
  private readonly inFlight = new Map<string, Promise<unknown>>();

  constructor(
    private readonly ctx: PodContext,
    private readonly guestDeadlineMs = STATS_DEADLINE_MS,
    private readonly oneGuestDeadlineMs = ONE_GUEST_DEADLINE_MS,
  ) {}

  /** Samples kept; entries of removed containers and sandboxes are dropped (L11). */
  get trackedSamples(): number {
    return this.latest.size;
  }

  private prune(): void {
    for (const key of this.latest.keys()) {
      const alive = key.startsWith('pod:') ? this.ctx.index.findSandbox(key.slice(4))?.id === key.slice(4) : this.ctx.index.containerById(key) !== undefined;
      if (!alive) this.latest.delete(key);
    }
  }

  /** Keeps a new sample with its CPU rate against the previous one of the same key. */
  private record<T extends GuestStats>(key: string, stats: T): Sample<T> {
    const prev = this.latest.get(key)?.stats;
    let usageNanoCores: number | undefined;
    if (prev && stats.timestampMs > prev.timestampMs && stats.cpuUsageNanos >= prev.cpuUsageNanos) {
      usageNanoCores = Math.round(Number(stats.cpuUsageNanos - prev.cpuUsageNanos) / ((stats.timestampMs - prev.timestampMs) / 1000));
    }
    const sample = { stats, usageNanoCores };
    this.latest.set(key, sample);
    return sample;
  }

  /** Runs `ask` unless the same request to the same guest is still out; then waits for that one. */
  private once<T>(key: string, ask: () => Promise<T>): Promise<T> {
    const pending = this.inFlight.get(key) as Promise<T> | undefined;
    if (pending) return pending;
    const p = ask().finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, p);
    return p;
  }

  /** Fresh samples of a sandbox's running containers, or undefined past `deadlineMs`. */
  private sampleContainers(sandboxId: string, deadlineMs: number): Promise<Map<string, Sample<GuestContainerStats>> | undefined> {
    const rt = this.ctx.runtimes.get(sandboxId);
    if (!rt) return Promise.resolve(new Map());
    return withDeadline(this.once(`containers:${sandboxId}`, async () => {
      const ids = this.ctx.index.containersOf(sandboxId).filter((c) => c.state === 'running').map((c) => c.id);
      const got = await rt.agent.containerStats(ids);
      return new Map([...got].map(([id, s]) => [id, this.record(id, s)]));
    }), deadlineMs);
  }

  private samplePod(sandboxId: string, deadlineMs: number): Promise<Sample<GuestStats> | undefined> {
    const rt = this.ctx.runtimes.get(sandboxId);
    if (!rt) return Promise.resolve(undefined);
    return withDeadline(this.once(`pod:${sandboxId}`, async () => this.record(`pod:${sandboxId}`, await rt.agent.sandboxStats())), deadlineMs);
  }

  async containerStats(query: string): Promise<ContainerStatsView> {
    const c = this.ctx.index.container(query);
    if (c.state !== 'running') throw failedPrecondition(`container ${c.id} is ${c.state.toUpperCase()}; stats exist only for running containers`);
    // One container's call waits for its guest alone and answers only with a fresh sample.
    const sample = (await this.sampleContainers(c.sandboxId, this.oneGuestDeadlineMs))?.get(c.id);
    if (!sample) throw unavailable(`no stats for container ${c.id}: its pod's guest did not answer within ${this.oneGuestDeadlineMs} ms, or has no cgroup for it`);
    return { container: c, ...sample };
  }

  async listContainerStats(filter: ContainerFilter): Promise<ContainerStatsView[]> {
    this.prune();
    return this.listedContainers(filterContainers(this.ctx.index, filter).filter((c) => c.state === 'running'));
  }

  private async listedContainers(list: ContainerRecord[]): Promise<ContainerStatsView[]> {
    const bySandbox = new Map<string, ContainerRecord[]>();
    for (const c of list) bySandbox.set(c.sandboxId, [...(bySandbox.get(c.sandboxId) ?? []), c]);
    const out: ContainerStatsView[] = [];
    await Promise.all([...bySandbox].map(async ([sandboxId, cs]) => {
      if (!this.ctx.runtimes.has(sandboxId)) return;
      const fresh = await this.sampleContainers(sandboxId, this.guestDeadlineMs);
      for (const c of cs) {
        const sample = fresh ? fresh.get(c.id) : this.latest.get(c.id) as Sample<GuestContainerStats> | undefined;
        out.push({ container: c, ...sample, ...(fresh || !sample ? {} : { stale: true }) });
      }
    }));
    return out.sort((a, b) => (a.container.createdAt < b.container.createdAt ? -1 : 1));
  }

  async sandboxStats(query: string): Promise<SandboxStatsView> {
    const s = this.ctx.index.sandbox(query);
    if (s.state !== 'ready' || !this.ctx.runtimes.has(s.id)) {
      throw failedPrecondition(`sandbox ${s.id} is not ready; stats exist only for running pods`);
    }
    const [pod, containers] = await Promise.all([
      this.samplePod(s.id, this.oneGuestDeadlineMs),
      this.sampleContainers(s.id, this.oneGuestDeadlineMs),
    ]);
    if (!pod || !containers) throw unavailable(`the guest of sandbox ${s.id} did not report its stats within ${this.oneGuestDeadlineMs} ms`);
    const running = this.ctx.index.containersOf(s.id).filter((c) => c.state === 'running');
    return { sandbox: s, guest: pod.stats, usageNanoCores: pod.usageNanoCores, containers: running.flatMap((c) => {
      const sample = containers.get(c.id);
      return sample ? [{ container: c, ...sample }] : [];
    }) };
  }

  async listSandboxStats(filter: SandboxFilter): Promise<SandboxStatsView[]> {
    this.prune();
    const list = filterSandboxes(this.ctx.index, filter).filter((s) => s.state === 'ready' && this.ctx.runtimes.has(s.id));
    return Promise.all(list.map(async (sandbox): Promise<SandboxStatsView> => {
      // The pod's numbers are its guest cgroup's (as kubelet reads a pod cgroup on a host), not a sum:
      // pressure averages do not add up, and exec'd processes count too.
      const [pod, containers] = await Promise.all([
        this.samplePod(sandbox.id, this.guestDeadlineMs),
        this.listedContainers(this.ctx.index.containersOf(sandbox.id).filter((c) => c.state === 'running')),
      ]);
      const sample = pod ?? this.latest.get(`pod:${sandbox.id}`) as Sample<GuestStats> | undefined;
      return { sandbox, guest: sample?.stats, usageNanoCores: sample?.usageNanoCores, ...(pod || !sample ? {} : { stale: true }), containers };
    }));
  }
}

/** How long a list waits for one sandbox's guest (kubelet polls every 10-15 s; past it, the last sample serves). */
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
