import * as grpc from '@grpc/grpc-js';
import { messageOf } from '../../errors.js';
import { logger } from '../../log.js';
import { nowNanos } from '../../pod/clock.js';
import type { ContainerEventResponse } from '../generated/runtime/v1/ContainerEventResponse.js';
import type { ContainerStatus } from '../generated/runtime/v1/ContainerStatus.js';
import type { RemoteRuntime } from './remote-runtime.js';

const log = logger('passthrough');

/** How often the other runtime is listed when it has no event stream of its own (containerd 1.6). */
const POLL_MS = 1000;
/** A dropped event stream (the other runtime restarting) is opened again after this long. */
const RECONNECT_MS = 2000;
/** Each poll's calls; a hung runtime skips a round rather than piling calls up. */
const POLL_CALL_TIMEOUT_MS = 10_000;

type EventType = 'CONTAINER_CREATED_EVENT' | 'CONTAINER_STARTED_EVENT' | 'CONTAINER_STOPPED_EVENT' | 'CONTAINER_DELETED_EVENT';

/** One object's state in a poll: a container's CRI state, or a sandbox's READY/NOTREADY. */
interface Seen { sandboxId: string; state: string }

/**
 * GetContainerEvents over both runtimes: podvisor's own events (VM pods) and
 * the pass-through runtime's, written into one stream for kubelet.
 *
 * The other runtime's events come from its own GetContainerEvents stream when
 * it has one (containerd 1.7+), reopened if it drops. containerd 1.6 answers
 * that RPC UNIMPLEMENTED; then its sandboxes and containers are listed every
 * POLL_MS and each change of state becomes the event containerd 1.7 would
 * send (created, started, stopped, deleted; a sandbox's events carry its id as
 * container_id, as containerd's do), with the pod's status and its
 * containers' statuses read at that moment.
 */
export class PassthroughEvents {
  constructor(private readonly remote: RemoteRuntime) {}

  /** Runs `local` (podvisor's own event stream into `call`) and feeds the other runtime's events into `call` until it ends. */
  async merged(call: grpc.ServerWritableStream<unknown, unknown>, local: () => Promise<void>): Promise<void> {
    const stop = new AbortController();
    const write = (ev: ContainerEventResponse) => {
      if (!call.cancelled && !stop.signal.aborted) call.write(ev);
    };
    const feeding = this.feed(write, stop.signal).catch((e) => log.warn({ err: messageOf(e) }, 'pass-through event feed ended'));
    try {
      await local();
    } finally {
      stop.abort();
      await feeding;
    }
  }

  private async feed(write: (ev: ContainerEventResponse) => void, signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const ended = await this.stream(write, signal);
      if (ended === 'unimplemented') return this.poll(write, signal);
      await sleep(RECONNECT_MS, signal);
    }
  }

  /** The other runtime's own stream, until it ends, fails, or we stop. */
  private stream(write: (ev: ContainerEventResponse) => void, signal: AbortSignal): Promise<'unimplemented' | 'ended'> {
    return new Promise((resolve) => {
      const s = this.remote.runtime.GetContainerEvents({});
      const onAbort = () => s.cancel();
      signal.addEventListener('abort', onAbort, { once: true });
      s.on('data', (ev: ContainerEventResponse) => write(ev));
      s.on('error', (e: grpc.ServiceError) => {
        signal.removeEventListener('abort', onAbort);
        if (e.code === grpc.status.UNIMPLEMENTED) {
          log.info('the pass-through runtime has no GetContainerEvents; its pods\' events come from listing it every second');
          resolve('unimplemented');
          return;
        }
        if (e.code !== grpc.status.CANCELLED) log.debug({ err: e.details }, 'pass-through event stream failed; reopening');
        resolve('ended');
      });
      s.on('end', () => {
        signal.removeEventListener('abort', onAbort);
        resolve('ended');
      });
    });
  }

  private async poll(write: (ev: ContainerEventResponse) => void, signal: AbortSignal): Promise<void> {
    let before: Map<string, Seen> | undefined;
    while (!signal.aborted) {
      const now = await this.snapshot().catch(() => undefined); // unreachable: try again next round
      if (now && before) {
        for (const [id, type, sandboxId] of changes(before, now)) {
          if (signal.aborted) return;
          write(await this.event(id, type, sandboxId));
        }
      }
      if (now) before = now;
      await sleep(POLL_MS, signal);
    }
  }

  private async snapshot(): Promise<Map<string, Seen>> {
    const [pods, containers] = await Promise.all([
      this.remote.call('ListPodSandbox', {}, POLL_CALL_TIMEOUT_MS),
      this.remote.call('ListContainers', {}, POLL_CALL_TIMEOUT_MS),
    ]);
    const out = new Map<string, Seen>();
    for (const p of pods.items) out.set(p.id, { sandboxId: p.id, state: String(p.state) });
    for (const c of containers.containers) out.set(c.id, { sandboxId: c.pod_sandbox_id, state: String(c.state) });
    return out;
  }

  /** An event with the pod's status and its containers' statuses as they are now (absent once the pod is gone). */
  private async event(id: string, type: EventType, sandboxId: string): Promise<ContainerEventResponse> {
    const ev: ContainerEventResponse = { container_id: id, container_event_type: type, created_at: nowNanos(), pod_sandbox_status: null, containers_statuses: [] };
    try {
      ev.pod_sandbox_status = (await this.remote.call('PodSandboxStatus', { pod_sandbox_id: sandboxId }, POLL_CALL_TIMEOUT_MS)).status;
      const { containers } = await this.remote.call('ListContainers', { filter: { pod_sandbox_id: sandboxId } }, POLL_CALL_TIMEOUT_MS);
      const statuses: ContainerStatus[] = [];
      for (const c of containers) {
        const st = await this.remote.call('ContainerStatus', { container_id: c.id }, POLL_CALL_TIMEOUT_MS).catch(() => undefined);
        if (st?.status) statuses.push(st.status);
      }
      ev.containers_statuses = statuses;
    } catch {
      // the pod went away meanwhile: the event still tells kubelet what changed
    }
    return ev;
  }
}

/** The events that turn `before` into `now`, in the order containerd sends them. */
export function changes(before: Map<string, Seen>, now: Map<string, Seen>): [string, EventType, string][] {
  const out: [string, EventType, string][] = [];
  const running = (s: string) => s === 'CONTAINER_RUNNING' || s === 'SANDBOX_READY';
  const exited = (s: string) => s === 'CONTAINER_EXITED' || s === 'SANDBOX_NOTREADY';
  for (const [id, cur] of now) {
    const old = before.get(id);
    if (!old) out.push([id, 'CONTAINER_CREATED_EVENT', cur.sandboxId]);
    if (running(cur.state) && (!old || !running(old.state))) out.push([id, 'CONTAINER_STARTED_EVENT', cur.sandboxId]);
    if (exited(cur.state) && (!old || !exited(old.state))) out.push([id, 'CONTAINER_STOPPED_EVENT', cur.sandboxId]);
  }
  for (const [id, old] of before) if (!now.has(id)) out.push([id, 'CONTAINER_DELETED_EVENT', old.sandboxId]);
  return out;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
