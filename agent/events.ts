import { EventEmitter } from 'node:events';
import type { AgentEvent, GuestLog, ProcessExit, ProcessOutput } from '../src/agent-protocol/types.js';

type EventBody = { output: ProcessOutput } | { exit: ProcessExit } | { log: GuestLog };
/**
 * Writes one event to the host: 'ok'; 'full' when it was taken but the
 * transport wants no more until a flush; 'closed' when it was not taken
 * because the subscriber is gone (the hub keeps the event and drops the sink).
 */
export type SinkResult = 'ok' | 'full' | 'closed';
type Sink = (event: AgentEvent) => SinkResult;

/**
 * Fan-in point for everything the guest pushes to the host. Events are
 * numbered and go to the one subscriber (the current host connection). While
 * there is none, or its transport is full, they wait in a queue; past
 * `pauseBytes` the hub is `congested` and output producers pause until
 * 'drain' (so a chatty container blocks on its pipe instead of filling the
 * agent's memory); past `maxQueuedBytes` the oldest output and log lines are
 * dropped (exits never), which the host sees as a gap in the sequence.
 */
export class EventHub extends EventEmitter<{ drain: [] }> {
  private sequence = 0;
  private readonly queue: AgentEvent[] = [];
  private queuedBytes = 0;
  private sink: Sink | undefined;
  private sinkFull = false;
  /** Events already handed to a subscriber, kept (bounded) for re-sending after a reconnect. */
  private readonly sent: AgentEvent[] = [];
  private sentBytes = 0;

  constructor(private readonly maxQueuedBytes = 8 << 20, private readonly pauseBytes = 1 << 20, private readonly keepSentBytes = 4 << 20) {
    super();
    this.setMaxListeners(0);
  }

  /** Producers of output should pause until 'drain'. */
  get congested(): boolean {
    return this.sinkFull || this.queuedBytes > this.pauseBytes;
  }

  publish(body: EventBody): void {
    const event = { ...body, sequence: ++this.sequence } as AgentEvent;
    if (this.sink && !this.sinkFull && this.queue.length === 0) {
      const result = this.sink(event);
      if (result !== 'closed') {
        this.remember(event);
        this.sinkFull = result === 'full';
        return;
      }
      this.sink = undefined;
    }
    this.enqueue(event);
  }

  /**
   * Makes `sink` the one subscriber (a new host connection replaces the old),
   * re-queues the kept events after `afterSequence` (the last one the host
   * has) and flushes the queue.
   */
  subscribe(sink: Sink, afterSequence = this.sequence): () => void {
    const resend = this.sent.filter((e) => e.sequence > afterSequence);
    this.sent.length = 0;
    this.sentBytes = 0;
    for (const e of resend.reverse()) {
      this.queue.unshift(e);
      this.queuedBytes += sizeOf(e);
    }
    this.sink = sink;
    this.flush();
    return () => {
      if (this.sink === sink) this.sink = undefined;
    };
  }

  /** The subscriber's transport has room again: deliver what waited. */
  flush(): void {
    const sink = this.sink;
    if (!sink) return;
    this.sinkFull = false;
    while (this.queue.length > 0 && this.sink === sink && !this.sinkFull) {
      const result = sink(this.queue[0]);
      if (result === 'closed') {
        this.sink = undefined;
        break;
      }
      const event = this.queue.shift()!;
      this.queuedBytes -= sizeOf(event);
      this.remember(event);
      this.sinkFull = result === 'full';
    }
    if (!this.congested) this.emit('drain');
  }

  private remember(event: AgentEvent): void {
    this.sent.push(event);
    this.sentBytes += sizeOf(event);
    while (this.sentBytes > this.keepSentBytes && this.sent.length > 0) this.sentBytes -= sizeOf(this.sent.shift()!);
  }

  private enqueue(event: AgentEvent): void {
    this.queue.push(event);
    this.queuedBytes += sizeOf(event);
    while (this.queuedBytes > this.maxQueuedBytes) {
      const victim = this.queue.findIndex((e) => e.exit === undefined);
      if (victim < 0) break;
      this.queuedBytes -= sizeOf(this.queue[victim]);
      this.queue.splice(victim, 1);
    }
  }
}

function sizeOf(event: AgentEvent): number {
  return 64 + (event.output?.data.length ?? 0) + (event.log?.message.length ?? 0);
}
