import net from 'node:net';
import { rmSync } from 'node:fs';
import { encodeFrame, FrameDecoder, FrameType } from '../../src/ttrpc/index.js';
import { decodeRequest, encodeResponse } from '../../src/ttrpc/messages.js';
import { decodeResponse } from '../../src/ttrpc/messages.js';

/**
 * Root in a guest, speaking on the agent channel: a man in the middle on a
 * sandbox's agent socket (the QEMU chardev podvisord connects to), between
 * podvisord and the pod's real agent. Every call goes to the real agent, so the
 * pod keeps working, except where the test says what the guest answers instead:
 * `before` answers a call without asking the agent (a guest answering at once),
 * `after` replaces the agent's answer. An answer can be any payload, an error
 * status, raw bytes on the channel (garbage, huge or endless frames) or none.
 */
export type GuestAnswer =
  | { payload: Uint8Array }
  | { status: { code: number; message: string } }
  | { raw: Buffer | ((conn: net.Socket, streamId: number) => void) }
  | { never: true };

export interface ProxiedCall {
  method: string;
  request: Uint8Array;
}

export class AgentChannelProxy {
  before?: (call: ProxiedCall) => GuestAnswer | undefined;
  after?: (call: ProxiedCall, answer: Uint8Array) => GuestAnswer | undefined;
  /** Calls seen per method (all of them, answered by the agent or by the test). */
  readonly calls = new Map<string, number>();
  /** Answers the test gave instead of the agent, per method. */
  readonly forged = new Map<string, number>();
  private readonly listener: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(readonly socketPath: string, private readonly agentPath: string) {
    this.listener = net.createServer((host) => this.serve(host));
  }

  listen(): Promise<this> {
    rmSync(this.socketPath, { force: true });
    return new Promise((resolve) => this.listener.listen(this.socketPath, () => resolve(this)));
  }

  /** Drops the host's connections (podvisord reconnects through the proxy, to the agent anew). */
  dropConnections(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.dropConnections();
    await new Promise((r) => this.listener.close(r));
  }

  private count(map: Map<string, number>, method: string): void {
    map.set(method, (map.get(method) ?? 0) + 1);
  }

  private serve(host: net.Socket): void {
    const guest = net.createConnection(this.agentPath);
    this.sockets.add(host).add(guest);
    const pending = new Map<number, ProxiedCall>();
    const end = () => {
      host.destroy();
      guest.destroy();
      this.sockets.delete(host);
      this.sockets.delete(guest);
    };
    host.on('error', end).on('close', end);
    guest.on('error', end).on('close', end);
    const answer = (streamId: number, a: GuestAnswer, method: string) => {
      this.count(this.forged, method);
      if ('never' in a) return;
      if ('raw' in a) {
        if (typeof a.raw === 'function') a.raw(host, streamId);
        else host.write(a.raw);
        return;
      }
      const body = 'payload' in a ? encodeResponse({ payload: a.payload }) : encodeResponse({ status: a.status, payload: new Uint8Array() });
      host.write(encodeFrame(streamId, FrameType.Response, 0, body));
    };
    const fromHost = new FrameDecoder((f) => {
      if (f.type === FrameType.Request) {
        let call: ProxiedCall | undefined;
        try {
          const req = decodeRequest(f.payload);
          call = { method: req.method, request: req.payload };
        } catch {
          // not ours to judge: forwarded as it came
        }
        if (call) {
          this.count(this.calls, call.method);
          const a = this.before?.(call);
          if (a) return answer(f.streamId, a, call.method);
          pending.set(f.streamId, call);
        }
      }
      guest.write(encodeFrame(f.streamId, f.type, f.flags, f.payload));
    }, () => undefined);
    const fromGuest = new FrameDecoder((f) => {
      const call = pending.get(f.streamId);
      if (call && f.type === FrameType.Response) {
        pending.delete(f.streamId);
        if (this.after) {
          const res = decodeResponse(f.payload);
          const a = res.status && res.status.code !== 0 ? undefined : this.after(call, res.payload);
          if (a) return answer(f.streamId, a, call.method);
        }
      }
      host.write(encodeFrame(f.streamId, f.type, f.flags, f.payload));
    }, () => undefined);
    host.on('data', (d: Buffer) => fromHost.push(d));
    guest.on('data', (d: Buffer) => fromGuest.push(d));
  }
}
