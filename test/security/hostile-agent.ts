import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TtrpcServer, type ServerStream } from '../../src/ttrpc/index.js';
import { AGENT_SERVICE, codec } from '../../src/agent-protocol/schema.js';
import { eventCodec } from '../../src/agent-protocol/api.js';
import type { AgentEvent } from '../../src/agent-protocol/types.js';

/**
 * A compromised guest agent for the security tests: a real ttRPC server on a
 * unix socket that answers Health, hands the test every GetEvents stream (so
 * the test sends what a hostile guest would) and every connection (for raw
 * bytes), and answers other methods as each test scripts them: by default
 * never, like a guest that stalls.
 */
export class HostileAgent {
  readonly dir = mkdtempSync(join(tmpdir(), 'pv-hostile-'));
  readonly socketPath: string;
  readonly streams: ServerStream[] = [];
  readonly connections: net.Socket[] = [];
  connects = 0;
  private sequence = 0;
  private readonly listener: net.Server;
  private readonly waiters: Array<() => void> = [];

  constructor(handlers: Partial<Record<string, (payload: Uint8Array) => Promise<Uint8Array>>> = {}, socketPath?: string) {
    this.socketPath = socketPath ?? join(this.dir, 'agent.sock');
    const health = codec<object>('HealthResponse');
    const server = new TtrpcServer()
      .unary(AGENT_SERVICE, 'Health', async () => health.encode({ status: 'SERVING', uptimeSeconds: 1, agentPid: 1, starts: 1 }))
      .stream(AGENT_SERVICE, 'GetEvents', async (_p, stream) => {
        this.streams.push(stream);
        for (const w of this.waiters.splice(0)) w();
        await stream.whenClosed;
      });
    for (const method of ['Version', 'ListContainers', 'WaitProcess', 'DeleteContainer', 'ContainerStats', 'SignalProcess', 'ExecProcess', 'Unmount', 'Shutdown']) {
      const h = handlers[method];
      server.unary(AGENT_SERVICE, method, h ?? (() => new Promise<Uint8Array>(() => undefined)));
    }
    this.listener = net.createServer((socket) => {
      this.connects++;
      this.connections.push(socket);
      socket.on('error', () => undefined);
      void server.serve(socket);
    });
  }

  listen(): Promise<this> {
    return new Promise((resolve) => this.listener.listen(this.socketPath, () => resolve(this)));
  }

  /** Resolves when a host has subscribed to events (a new subscription after `count` streams). */
  async subscribed(count = 1): Promise<ServerStream> {
    while (this.streams.length < count) await new Promise<void>((r) => this.waiters.push(r));
    return this.streams[count - 1]!;
  }

  /** Sends a well-formed event on the latest subscription. */
  sendEvent(ev: Omit<AgentEvent, 'sequence'>): void {
    this.streams[this.streams.length - 1]!.send(eventCodec().encode({ ...ev, sequence: ++this.sequence } as AgentEvent));
  }

  async close(): Promise<void> {
    for (const s of this.connections) s.destroy();
    await new Promise((r) => this.listener.close(r));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Records uncaught exceptions and unhandled rejections while a test runs (any one means the daemon would have died). */
export function watchForCrashes(): { crashes: unknown[]; stop(): void } {
  const crashes: unknown[] = [];
  const onError = (e: unknown) => crashes.push(e);
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  return { crashes, stop: () => { process.off('uncaughtException', onError); process.off('unhandledRejection', onError); } };
}
