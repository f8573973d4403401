import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { deadlineExceeded, internal, invalidArgument, messageOf, unavailable, type PodvisorError } from '../errors.js';
import { encodeFrame, FrameDecoder, FrameFlag, FrameType, MAX_MESSAGE_LENGTH, type Frame } from './frame.js';
import { decodeResponse, encodeRequest } from './messages.js';
import { SESSION_METADATA_KEY } from './server.js';
import { capMessage, errorOf } from './status.js';

export interface TtrpcClientOptions {
  /**
   * Sent as `ttrpc-session` metadata on every request, so a server on a
   * transport that can change hands unnoticed starts a fresh session.
   */
  session?: string;
  /**
   * Stream id allocator shared by successive connections of one client, so
   * ids never repeat across reconnects (a stale reply can then never be
   * taken for a new call's). Default: a private counter from 1.
   */
  streamIds?: { next: number };
}

export interface CallOptions {
  /** Fails the call with DEADLINE_EXCEEDED after this long (also sent to the server). */
  timeoutMs?: number;
  metadata?: Record<string, string>;
}

interface Pending {
  label: string;
  resolve: (payload: Uint8Array) => void;
  reject: (err: PodvisorError) => void;
  onData?: (payload: Uint8Array) => void;
  timer?: NodeJS.Timeout;
}

/**
 * A ttRPC client over one byte-stream connection. Calls are multiplexed on odd
 * stream ids; a server-streaming call delivers each data frame to `onData` and
 * settles when the server's final response arrives. When the connection closes
 * every pending call fails with UNAVAILABLE and 'close' is emitted once.
 */
export class TtrpcClient extends EventEmitter<{ close: [reason: string]; protocolError: [reason: string] }> {
  private readonly streamIds: { next: number };
  private readonly session: string | undefined;
  private readonly pending = new Map<number, Pending>();
  private closedReason: string | undefined;
  /** Set when the connection was ended because the peer broke the protocol. */
  protocolFailure: string | undefined;

  constructor(private readonly conn: Duplex, options: TtrpcClientOptions = {}) {
    super();
    this.streamIds = options.streamIds ?? { next: 1 };
    this.session = options.session;
    const decoder = new FrameDecoder(
      (frame) => this.onFrame(frame),
      (big) => this.fail(big.streamId, internal(`server sent a ${big.length}-byte frame, over the ttRPC limit`)),
    );
    // Nothing the peer sends may throw out of a socket listener (that would be an
    // uncaught exception in the daemon): a frame the decoder or a stream's
    // onData cannot take is a protocol error that ends this connection.
    conn.on('data', (chunk: Buffer) => {
      if (this.closedReason !== undefined) return;
      try {
        decoder.push(chunk);
      } catch (err) {
        const reason = `protocol error: ${capMessage(messageOf(err))}`;
        this.protocolFailure = reason;
        this.emit('protocolError', reason);
        this.shutdown(reason);
      }
    });
    conn.on('error', (err) => this.shutdown(`connection error: ${messageOf(err)}`));
    conn.on('end', () => this.shutdown('connection closed by the peer'));
    conn.on('close', () => this.shutdown('connection closed'));
  }

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /** A unary call: request bytes in, response bytes out. */
  call(service: string, method: string, payload: Uint8Array, options: CallOptions = {}): Promise<Uint8Array> {
    return this.start(service, method, payload, options);
  }

  /** A server-streaming call; resolves (with the final payload) when the server ends the stream. */
  stream(service: string, method: string, payload: Uint8Array, onData: (payload: Uint8Array) => void, options: CallOptions = {}): Promise<Uint8Array> {
    return this.start(service, method, payload, options, onData);
  }

  /** Stops reading from the peer (backpressure); frames already received are still delivered. */
  pause(): void {
    this.conn.pause();
  }

  resume(): void {
    this.conn.resume();
  }

  /** Writes raw bytes on the connection: for tests of the server's defences. */
  writeRaw(bytes: Uint8Array): void {
    this.conn.write(bytes);
  }

  /** Allocates the stream id the next call will use. */
  reserveStreamId(): number {
    const id = this.streamIds.next;
    // Odd ids only; wrap well before 2^32.
    this.streamIds.next = id >= 0xfffffff0 ? 1 : id + 2;
    return id;
  }

  /** Waits for the reply on a stream id used by a frame sent with writeRaw. */
  awaitReply(streamId: number, label: string): Promise<Uint8Array> {
    return new Promise((resolve, reject) => this.pending.set(streamId, { label, resolve, reject }));
  }

  close(): void {
    this.shutdown('client closed');
  }

  private start(service: string, method: string, payload: Uint8Array, options: CallOptions, onData?: (payload: Uint8Array) => void): Promise<Uint8Array> {
    const label = `${service}/${method}`;
    if (this.closedReason !== undefined) return Promise.reject(unavailable(`${label}: ${this.closedReason}`));
    const body = encodeRequest({
      service,
      method,
      payload,
      timeoutNano: options.timeoutMs ? options.timeoutMs * 1e6 : 0,
      metadata: [
        ...Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value })),
        ...(this.session ? [{ key: SESSION_METADATA_KEY, value: this.session }] : []),
      ],
    });
    if (body.length > MAX_MESSAGE_LENGTH) {
      return Promise.reject(invalidArgument(`${label}: request of ${body.length} bytes exceeds the ${MAX_MESSAGE_LENGTH}-byte ttRPC limit`));
    }
    const streamId = this.reserveStreamId();
    return new Promise((resolve, reject) => {
      const entry: Pending = { label, resolve, reject, onData };
      if (options.timeoutMs) {
        entry.timer = setTimeout(() => this.fail(streamId, deadlineExceeded(`${label}: no answer within ${options.timeoutMs} ms`)), options.timeoutMs);
      }
      this.pending.set(streamId, entry);
      this.conn.write(encodeFrame(streamId, FrameType.Request, onData ? FrameFlag.RemoteClosed : 0, body));
    });
  }

  private onFrame(frame: Frame): void {
    const entry = this.pending.get(frame.streamId);
    if (!entry) return; // a late answer to a call that timed out
    if (frame.type === FrameType.Data) {
      if (!(frame.flags & FrameFlag.NoData)) entry.onData?.(frame.payload);
      return;
    }
    if (frame.type !== FrameType.Response) return;
    this.settle(frame.streamId);
    let response;
    try {
      response = decodeResponse(frame.payload);
    } catch (err) {
      entry.reject(internal(`${entry.label}: malformed ttRPC response: ${messageOf(err)}`));
      return;
    }
    if (response.status && response.status.code !== 0) entry.reject(errorOf(response.status, entry.label));
    else entry.resolve(response.payload);
  }

  private settle(streamId: number): void {
    const entry = this.pending.get(streamId);
    if (entry?.timer) clearTimeout(entry.timer);
    this.pending.delete(streamId);
  }

  private fail(streamId: number, err: PodvisorError): void {
    const entry = this.pending.get(streamId);
    if (!entry) return;
    this.settle(streamId);
    entry.reject(err);
  }

  private shutdown(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    this.conn.destroy();
    for (const [streamId, entry] of [...this.pending]) this.fail(streamId, unavailable(`${entry.label}: ${reason}`));
    this.emit('close', reason);
  }
}
