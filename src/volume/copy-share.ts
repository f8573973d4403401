import { createHash } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { GUEST_VOLUMES_DIR } from '../agent-protocol/guest-paths.js';
import type { ReadVolumeRequest, ReadVolumeResponse, VolumeEntry, WatchVolumesRequest, WatchVolumesResponse, WriteVolumeRequest } from '../agent-protocol/types.js';
import { isPodvisorError, messageOf } from '../errors.js';
import { logger } from '../log.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { COPY_LIMITS, hostManifest, readHostFile, removeBack, writeBack, type Manifest } from './host-tree.js';
import { checkFetched, checkManifest, overVolumeBytes, planWriteBack } from './write-back-plan.js';
import type { ShareVolume } from './share-dir.js';
import { WriteBackRefusals } from './write-back-refusals.js';

const log = logger('volume-copy');

/**
 * Share mode "copy" (Kata's shared_fs=none, with write-back): no device and no
 * host helper; the agent keeps a copy of each volume in guest RAM and podvisord
 * keeps it in step over the agent channel. Made for VM-template clones, whose
 * guest RAM is a private mapping that no virtio-fs helper can serve, and usable
 * on any sandbox ([volumes] share_mode = "copy").
 *
 * Direction of each volume:
 * - read-only everywhere it is mounted (configMap, secret, projected token,
 *   etc-hosts, read-only hostPath): host -> guest. The host tree is walked on
 *   inotify events at its top and every SYNC_INTERVAL_MS, and what changed is
 *   pushed, directories and files before links, removals last, so kubelet's
 *   `..data` swap lands whole.
 * - writable in some container (emptyDir, termination log, read-write hostPath):
 *   copied in once, then guest -> host. The guest copy is read back when the
 *   agent reports a change (inotify in the guest, WatchVolumes) and when a
 *   container using it exits (so kubelet finds the termination log).
 *   A change made on the host side after the copy is not seen in the guest.
 * Bounds (src/volume/host-tree.ts COPY_LIMITS): entries, bytes per file and per
 * volume; a volume over them is refused at CreateContainer. The guest is held to
 * the same bounds on the way back (write-back-plan.ts: its answers are checked
 * whole before anything is written), and the long poll is paced, so root in the
 * guest answering anything, as fast as it likes, costs the host a bounded amount.
 * Volumes are keyed by host path, so containers of a pod that mount the same
 * emptyDir share one guest copy.
 */

/** How often host sources of read-only volumes are walked (besides inotify on their top directory). */
export const SYNC_INTERVAL_MS = 250;
/** How long after an inotify event on a source the push starts (kubelet's writer takes a few ms). */
const HOST_EVENT_DEBOUNCE_MS = 30;
/** How long one WatchVolumes long poll waits in the guest (a writable volume added meanwhile is watched from the next one). */
export const WATCH_MS = 2_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The least time between the starts of two WatchVolumes calls: a guest that answers at once (changes or none) cannot spin the host. */
export const MIN_WATCH_SPACING_MS = SYNC_INTERVAL_MS;
/**
 * Write-back pace: after the long poll's pulls wrote B bytes the next call waits B / this many
 * seconds, so a guest rewriting its volumes without end costs the host at most this write rate.
 */
export const WRITE_BACK_BYTES_PER_SECOND = 16 << 20;
/** Data per WriteVolume / ReadVolume call (the agent message limit is 4 MiB). */
const BATCH_BYTES = 2 << 20;

/** What the copy mode needs from the guest agent. */
export interface VolumeCopyAgent {
  writeVolume(req: WriteVolumeRequest): Promise<void>;
  readVolume(req: ReadVolumeRequest): Promise<ReadVolumeResponse>;
  removeVolume(volumeId: string): Promise<void>;
  /** Waits at most `req.waitMs` for a change in the guest to any of its volumes; answers the ones that changed (and some of their reads). */
  watchVolumes(req: WatchVolumesRequest): Promise<WatchVolumesResponse>;
}

interface CopiedVolume {
  id: string;
  hostPath: string;
  /** Some container mounts it read-write: the guest copy is written back. */
  writable: boolean;
  containers: string[];
}

/** What this daemon last synced of a volume (not persisted: after a restart everything is compared again). */
interface SyncState {
  /** The host manifest the guest copy matches (read-only volumes). */
  pushed?: Manifest;
  /** path -> guest stamp already written back (writable volumes). */
  pulled?: Map<string, string>;
  /** path -> bytes of each file written back (the guest's stamps only claim a size). */
  sizes?: Map<string, number>;
  /** How many pulls have updated `pulled` (a read made before the last one is stale). */
  pulls?: number;
  /** The last error logged, so a failing volume logs once, not every tick. */
  lastError?: string;
}

const STATE_FILE = 'copies.json';

export function copyVolumeId(hostPath: string): string {
  return createHash('sha256').update(hostPath).digest('hex').slice(0, 16);
}

export class CopyShare {
  private agent?: VolumeCopyAgent;
  private timer?: NodeJS.Timeout;
  private kicked = false;
  private kickTimer?: NodeJS.Timeout;
  private readonly hostWatchers = new Map<string, FSWatcher>();
  private readonly sync = new Map<string, SyncState>();
  /** What the guest's answers were refused for lately, for the operator (bounded; write-back-refusals.ts). */
  readonly refusals = new WriteBackRefusals();
  /** Bumped by every attach and detach: a long-poll loop of an earlier attach sees it and ends, even with the same agent. */
  private attachment = 0;
  /**
   * Sync steps run in two chains: pushes (read-only volumes) in one, pulls (writable ones) in the
   * other, so a slow push does not hold back a write-back on the way to the host. Adding and
   * removing volumes takes both (`exclusive`), so it never interleaves with either.
   */
  private chain: Promise<unknown> = Promise.resolve();
  private pullChain: Promise<unknown> = Promise.resolve();

  private constructor(readonly dir: string, private readonly volumes: Map<string, CopiedVolume>) {}

  static async create(dir: string): Promise<CopyShare> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const share = new CopyShare(dir, new Map());
    await share.save();
    return share;
  }

  /** The share of a sandbox an earlier podvisord made. */
  static open(dir: string): CopyShare {
    let list: CopiedVolume[] = [];
    try {
      list = (JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as { volumes: CopiedVolume[] }).volumes;
    } catch (e) {
      log.warn({ dir, err: messageOf(e) }, 'copy share has no readable state; its volumes are not synced');
    }
    return new CopyShare(dir, new Map(list.map((v) => [v.id, v])));
  }

  /** Starts keeping the guest in step through this agent (after boot, or after a daemon restart). */
  attachAgent(agent: VolumeCopyAgent): void {
    this.detachAgent();
    this.agent = agent;
    this.timer = setInterval(() => this.kick(), SYNC_INTERVAL_MS);
    this.timer.unref();
    void this.watchGuest(agent, ++this.attachment);
  }

  /** The agent is gone (VM stopped or died): nothing more to sync. */
  detachAgent(): void {
    this.attachment++;
    clearInterval(this.timer);
    clearTimeout(this.kickTimer);
    this.timer = undefined;
    this.kickTimer = undefined;
    this.agent = undefined;
    for (const w of this.hostWatchers.values()) w.close();
    this.hostWatchers.clear();
  }

  /**
   * An inotify event on a source: push shortly, once kubelet's atomic writer has finished its
   * steps (new directory, `..data` swap, old directory removed), so one push carries the update.
   */
  private kickSoon(): void {
    if (this.kickTimer) return;
    this.kickTimer = setTimeout(() => {
      this.kickTimer = undefined;
      this.kick();
    }, HOST_EVENT_DEBOUNCE_MS);
    this.kickTimer.unref();
  }

  /** Pushes the read-only volumes' host changes soon (a tick, or an inotify event on a source). */
  private kick(): void {
    if (this.kicked || !this.agent) return;
    this.kicked = true;
    void this.serial(async () => {
      this.kicked = false;
      await this.syncAll();
    });
  }

  /**
   * Guest -> host: the agent answers a long poll when a writable copy changes
   * (inotify in the guest), so a write reaches the host in one round trip
   * instead of waiting for a poll, and an idle pod costs one call per WATCH_MS.
   */
  private async watchGuest(agent: VolumeCopyAgent, attachment: number): Promise<void> {
    let nextAt = 0;
    let lastRefusal: string | undefined;
    const attached = () => this.attachment === attachment;
    while (attached()) {
      const wait = nextAt - performance.now();
      if (wait > 0) await sleep(wait);
      if (!attached()) return;
      nextAt = performance.now() + MIN_WATCH_SPACING_MS;
      const ids = [...this.volumes.values()].filter((v) => v.writable).map((v) => v.id);
      let changed: string[] = [];
      const reads = new Map<string, ReadVolumeResponse>();
      let stale = (_id: string) => true;
      try {
        // What the host has of each, so the answer can carry the changes themselves (one trip, not two).
        const known = ids.map((volumeId) => ({ volumeId, paths: [], known: this.knownOf(volumeId), withData: true }));
        const generations = new Map(ids.map((id) => [id, this.sync.get(id)?.pulls ?? 0]));
        const res = ids.length > 0 ? await agent.watchVolumes({ volumeIds: ids, waitMs: WATCH_MS, known }) : undefined;
        changed = res?.changed ?? [];
        // A read made against stamps a flush has replaced since is stale: such a volume is read again.
        (res?.readIds ?? []).forEach((id, i) => { if (res!.reads?.[i]) reads.set(id, res!.reads[i]!); });
        stale = (id) => (this.sync.get(id)?.pulls ?? 0) !== generations.get(id);
        if (ids.length === 0) await sleep(SYNC_INTERVAL_MS);
      } catch (e) {
        if (!attached()) return;
        this.refusals.record(e);
        // An answer the host refused (INTERNAL: undecodable, too big, too many fields) is the guest's doing: said once.
        const msg = messageOf(e);
        if (isPodvisorError(e, 'INTERNAL') && msg !== lastRefusal) log.warn({ dir: this.dir, err: msg }, 'the guest\'s answer to the volume long poll was refused; trying again');
        else log.debug({ dir: this.dir, err: msg }, 'watching the guest copies failed; trying again');
        if (isPodvisorError(e, 'INTERNAL')) lastRefusal = msg;
        await sleep(1000);
        continue;
      }
      if (changed.length === 0 || !attached()) continue;
      const written = { bytes: 0 };
      await this.serialPull(async () => {
        // Each volume once, whatever the answer lists; ids of volumes this share does not write back (another pod's, read-only ones) are ignored.
        for (const id of new Set(changed)) {
          const v = this.volumes.get(id);
          if (v?.writable) await this.pull(agent, v, stale(id) ? undefined : reads.get(id), written).catch((e) => this.report(v, e));
        }
      });
      nextAt = Math.max(nextAt, performance.now() + (written.bytes / WRITE_BACK_BYTES_PER_SECOND) * 1000);
    }
  }

  /** Copies a volume into the guest (once per host path) and returns the guest path a container binds. */
  async addVolume(containerId: string, vol: ShareVolume): Promise<string> {
    const st = await stat(vol.hostPath).catch(() => undefined);
    if (!st) await mkdir(vol.hostPath, { recursive: true, mode: 0o755 }); // as containerd does
    const id = copyVolumeId(vol.hostPath);
    await this.exclusive(async () => {
      const agent = this.requireAgent();
      let v = this.volumes.get(id);
      const isNew = !v;
      v ??= { id, hostPath: vol.hostPath, writable: false, containers: [] };
      if (isNew) {
        this.sync.set(id, {});
        try {
          await this.push(agent, v);
        } catch (e) {
          this.sync.delete(id);
          await agent.removeVolume(id).catch(() => undefined);
          throw e;
        }
      }
      if (!vol.readonly && !v.writable) {
        v.writable = true;
        // What the guest holds now came from the host: only later changes go back.
        this.sync.set(id, { ...(await this.guestStamps(agent, v)), pulls: (this.sync.get(id)?.pulls ?? 0) + 1 });
      }
      if (!v.containers.includes(containerId)) v.containers.push(containerId);
      this.volumes.set(id, v);
      await this.save();
    });
    return `${GUEST_VOLUMES_DIR}/${id}`;
  }

  /** Drops a container's volumes; one no container uses any more is written back (if writable) and removed from the guest. */
  async removeContainer(containerId: string): Promise<void> {
    await this.exclusive(async () => {
      for (const v of [...this.volumes.values()]) {
        if (!v.containers.includes(containerId)) continue;
        v.containers = v.containers.filter((c) => c !== containerId);
        if (v.containers.length > 0) continue;
        if (this.agent) {
          if (v.writable) await this.pull(this.agent, v).catch((e) => this.report(v, e));
          await this.agent.removeVolume(v.id).catch((e) => log.warn({ volume: v.hostPath, err: messageOf(e) }, 'could not remove a volume copy from the guest'));
        }
        this.volumes.delete(v.id);
        this.sync.delete(v.id);
        this.hostWatchers.get(v.id)?.close();
        this.hostWatchers.delete(v.id);
      }
      await this.save();
    });
  }

  /** Brings the host up to date with the guest now (a container exited: kubelet reads its termination log next). */
  flush(containerId?: string): Promise<void> {
    return this.serialPull(async () => {
      if (!this.agent) return;
      for (const v of this.volumes.values()) {
        if (v.writable && (!containerId || v.containers.includes(containerId))) await this.pull(this.agent, v).catch((e) => this.report(v, e));
      }
    });
  }

  async destroy(): Promise<void> {
    this.detachAgent();
    await Promise.all([this.chain, this.pullChain]);
    await rm(this.dir, { recursive: true, force: true });
  }

  // ------------------------------------------------------------ syncing

  private serial<T>(step: () => Promise<T>): Promise<T> {
    const run = this.chain.then(step, step);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private serialPull<T>(step: () => Promise<T>): Promise<T> {
    const run = this.pullChain.then(step, step);
    this.pullChain = run.catch(() => undefined);
    return run;
  }

  /** Both chains: the main one first, then the pull one (a pull never waits for the main chain, so no deadlock). */
  private exclusive<T>(step: () => Promise<T>): Promise<T> {
    return this.serial(() => this.serialPull(step));
  }

  private requireAgent(): VolumeCopyAgent {
    if (!this.agent) throw new Error('the sandbox agent is not connected; volumes cannot be copied');
    return this.agent;
  }

  /** Host -> guest for every read-only volume (writable ones are read back by watchGuest and flush). */
  private async syncAll(): Promise<void> {
    const agent = this.agent;
    if (!agent) return;
    for (const v of this.volumes.values()) {
      if (v.writable) continue;
      try {
        this.watchHost(v);
        await this.push(agent, v);
        const s = this.sync.get(v.id);
        if (s) s.lastError = undefined;
      } catch (e) {
        this.report(v, e);
      }
    }
  }

  /** inotify on a read-only volume's source: kubelet's atomic writer swaps `..data` there, so an update is pushed at once. */
  private watchHost(v: CopiedVolume): void {
    if (this.hostWatchers.has(v.id)) return;
    try {
      const w = watch(v.hostPath, { persistent: false }, () => this.kickSoon());
      w.on('error', () => {
        w.close();
        this.hostWatchers.delete(v.id); // the tick still pushes; the next one watches again
      });
      this.hostWatchers.set(v.id, w);
    } catch {
      // Gone or not watchable: the tick still covers it.
    }
  }

  private report(v: CopiedVolume, e: unknown): void {
    const s = this.sync.get(v.id) ?? {};
    const msg = messageOf(e);
    this.refusals.record(e, v);
    if (s.lastError !== msg) log.warn({ volume: v.hostPath, err: msg }, 'volume copy not in step');
    s.lastError = msg;
    this.sync.set(v.id, s);
  }

  /** Host -> guest: what changed since the last push (everything, the first time). */
  private async push(agent: VolumeCopyAgent, v: CopiedVolume): Promise<void> {
    const s = this.sync.get(v.id) ?? {};
    const before = s.pushed ?? (await this.guestManifest(agent, v));
    const now = await hostManifest(v.hostPath);
    const changed = [...now.values()].filter((e) => !sameEntry(before.get(e.path), e));
    // Files and directories first, links after them (the `..data` swap), removals last, deepest first.
    const puts = [...changed.filter((e) => e.kind !== 'symlink'), ...changed.filter((e) => e.kind === 'symlink')];
    const removes = [...before.keys()].filter((p) => p !== '' && !now.has(p)).sort((a, b) => b.length - a.length);
    if (puts.length === 0 && removes.length === 0) {
      s.pushed = now;
      this.sync.set(v.id, s);
      return;
    }
    let batch: VolumeEntry[] = [];
    let bytes = 0;
    for (const e of puts) {
      let entry: VolumeEntry = { path: e.path, kind: e.kind, mode: e.mode, ...(e.data ? { data: e.data } : {}) };
      if (e.kind === 'file') {
        const data = await readHostFile(v.hostPath, e.path);
        if (!data) {
          now.delete(e.path); // changed under the walk: sent next tick
          continue;
        }
        entry = { ...entry, data };
        if (bytes + data.length > BATCH_BYTES && batch.length > 0) {
          await agent.writeVolume({ volumeId: v.id, put: batch, remove: [] });
          batch = [];
          bytes = 0;
        }
        bytes += data.length;
      }
      batch.push(entry);
    }
    const t0 = performance.now();
    await agent.writeVolume({ volumeId: v.id, put: batch, remove: removes });
    s.pushed = now;
    this.sync.set(v.id, s);
    log.debug({ volume: v.hostPath, put: puts.length, removed: removes.length, ms: Math.round(performance.now() - t0) }, 'host changes pushed');
  }

  /** The host's stamps of a writable volume, as ReadVolume's `known`. */
  private knownOf(volumeId: string): VolumeEntry[] {
    return [...(this.sync.get(volumeId)?.pulled ?? new Map<string, string>())].map(([path, stamp]) => ({ path, stamp, kind: 'file' as const, mode: 0 }));
  }

  /**
   * Guest -> host: files and directories the guest changed or removed since the last pull.
   * `read` is the volume's manifest when WatchVolumes already brought it (made against the same
   * stamps: pulls of a volume run one at a time, in the pull chain). The answer is checked whole
   * (write-back-plan.ts) before anything is written. What the host holds is recorded as each step
   * lands (stamps and sizes), also when a later step fails: a refused answer leaves nothing the next
   * pull does not count or cannot remove. `tally.bytes` grows by what is written (the long poll's pace).
   */
  private async pull(agent: VolumeCopyAgent, v: CopiedVolume, read?: ReadVolumeResponse, tally = { bytes: 0 }): Promise<void> {
    const s = this.sync.get(v.id) ?? {};
    this.sync.set(v.id, s);
    const held = (s.pulled ??= new Map<string, string>());
    const sizes = (s.sizes ??= new Map<string, number>());
    const t0 = performance.now();
    // The manifest, with the data of files the host has not seen as they are now (as much as one answer holds).
    const res = read ?? await agent.readVolume({ volumeId: v.id, paths: [], known: this.knownOf(v.id), withData: true });
    if (!res.exists) throw new Error(`the guest has no copy of ${v.hostPath}`);
    const plan = planWriteBack(v.hostPath, res.entries, { stamps: held, sizes });
    const old = new Map(sizes);
    const landed = (e: VolumeEntry) => {
      held.set(e.path, e.stamp ?? '');
      if (e.kind === 'file') sizes.set(e.path, e.data?.length ?? 0);
      else sizes.delete(e.path);
    };
    try {
      // Removals first: the host then never holds what the guest removed beside what it wrote since (both within the bound).
      const removed = [...held.keys()].filter((p) => p !== '' && !plan.next.has(p)).sort((a, b) => b.length - a.length);
      for (const p of removed) {
        await removeBack(v.hostPath, p);
        held.delete(p);
        sizes.delete(p);
      }
      const checked = new Set<string>();
      for (const e of [...plan.dirs, ...plan.files]) {
        await writeBack(v.hostPath, e, checked);
        landed(e);
        tally.bytes += e.data?.length ?? 0;
      }
      // File contents in batches the agent can answer in one message (sizes as the stamps claim; what arrives is held to the bounds).
      let total = plan.heldBytes;
      const claimed = new Map(plan.fetch.map((f) => [f.path, f.size]));
      let paths: string[] = [];
      let bytes = 0;
      const fetch = async () => {
        if (paths.length === 0) return;
        const got = checkFetched(v.hostPath, new Set(paths), (await agent.readVolume({ volumeId: v.id, paths })).entries);
        for (const e of got) {
          const size = e.data?.length ?? 0;
          const before = old.get(e.path) ?? 0;
          total += Math.max(size, before) - Math.max(claimed.get(e.path)!, before);
          if (total > COPY_LIMITS.volumeBytes) throw overVolumeBytes(v.hostPath, total);
          await writeBack(v.hostPath, e, checked);
          landed(e);
          tally.bytes += size;
        }
        paths = [];
        bytes = 0;
      };
      for (const f of plan.fetch) {
        if (bytes + f.size > BATCH_BYTES) await fetch();
        paths.push(f.path);
        bytes += f.size;
      }
      await fetch();
      // Links (never written, listed so the host keeps its own) and what was unchanged. A file gone between
      // the manifest and its read keeps what the host had; the next pull sees whether it is back.
      for (const [p, stamp] of plan.next) if (!claimed.has(p)) held.set(p, stamp);
      s.lastError = undefined;
      const files = plan.files.length + plan.fetch.length;
      if (files + removed.length > 0) {
        log.debug({ volume: v.hostPath, files, removed: removed.length, ms: Math.round(performance.now() - t0) }, 'guest changes written back');
      }
    } finally {
      s.pulls = (s.pulls ?? 0) + 1;
    }
  }

  /** What the guest copy holds, as a manifest whose stamps never equal a host's (so every file is compared again). */
  private async guestManifest(agent: VolumeCopyAgent, v: CopiedVolume): Promise<Manifest> {
    const res = await agent.readVolume({ volumeId: v.id, paths: [] });
    if (res.exists) checkManifest(v.hostPath, res.entries);
    const out: Manifest = new Map();
    for (const e of res.exists ? res.entries : []) out.set(e.path, { ...e, stamp: `guest:${e.stamp}`, size: 0 });
    return out;
  }

  /** The guest's stamps of a volume just copied in (held to the write-back bounds: they are what the next pull compares to). */
  private async guestStamps(agent: VolumeCopyAgent, v: CopiedVolume): Promise<Pick<SyncState, 'pulled' | 'sizes'>> {
    const res = await agent.readVolume({ volumeId: v.id, paths: [] });
    const plan = planWriteBack(v.hostPath, res.entries, { stamps: new Map(), sizes: new Map() });
    return { pulled: plan.next, sizes: plan.sizes };
  }

  private save(): Promise<void> {
    return writeFileAtomic(join(this.dir, STATE_FILE), JSON.stringify({ volumes: [...this.volumes.values()] }));
  }
}

function sameEntry(a: VolumeEntry | undefined, b: VolumeEntry): boolean {
  if (!a || a.kind !== b.kind || a.mode !== b.mode || a.stamp !== b.stamp) return false;
  return a.kind !== 'symlink' || Buffer.compare(Buffer.from(a.data ?? []), Buffer.from(b.data ?? [])) === 0;
}
