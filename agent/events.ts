import type { AgentEvent, GuestLog, ProcessExit, ProcessOutput } from '../src/agent-client/types.js';

type EventBody = { output: ProcessOutput } | { exit: ProcessExit } | { log: GuestLog };
type Sink = (event: AgentEvent) => boolean;

/**
 * Fan-in point for everything the guest pushes to the host. Events are
 * numbered; while no host is subscribed they wait in a bounded queue (oldest
 * output and log lines dropped first, exits kept) so a reconnecting host gets
 * what happened while it was away.
 */
export class EventHub {
  private sequence = 0;
  private readonly queue: AgentEvent[] = [];
  private queuedBytes = 0;
  private sink: Sink | undefined;

  constructor(private readonly maxQueuedBytes = 8 << 20) {}

  publish(body: EventBody): void {
    const event = { ...body, sequence: ++this.sequence } as AgentEvent;
    if (this.sink && this.queue.length === 0 && this.sink(event)) return;
    this.enqueue(event);
  }

  /** Makes `sink` the one subscriber (a new host connection replaces the old) and flushes the queue. */
  subscribe(sink: Sink): () => void {
    this.sink = sink;
    while (this.queue.length > 0 && this.sink === sink) {
      const event = this.queue[0];
      if (!sink(event)) break;
      this.queue.shift();
      this.queuedBytes -= sizeOf(event);
    }
    return () => {
      if (this.sink === sink) this.sink = undefined;
    };
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
