import { EventEmitter } from 'node:events';
import type { Nanos } from './clock.js';

/** What happened to a container; the CRI layer names them for kubelet. */
export type ContainerEventType = 'created' | 'started' | 'stopped' | 'deleted';

export interface ContainerEvent {
  containerId: string;
  sandboxId: string;
  type: ContainerEventType;
  createdAt: Nanos;
}

/**
 * Lifecycle events for GetContainerEvents (kubelet's evented PLEG). Each
 * subscriber gets every event after it subscribed; the pod services publish.
 */
export class ContainerEventBus {
  private readonly emitter = new EventEmitter();

  constructor() {
    // One listener per open GetContainerEvents stream; there may be many.
    this.emitter.setMaxListeners(0);
  }

  publish(ev: ContainerEvent): void {
    this.emitter.emit('event', ev);
  }

  subscribe(listener: (ev: ContainerEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }
}
