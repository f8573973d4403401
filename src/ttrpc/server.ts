import type { Duplex } from 'node:stream';
import { invalidArgument, resourceExhausted, unimplemented, messageOf } from '../errors.js';
import { logger } from '../log.js';
import { encodeFrame, FrameDecoder, FrameType, MAX_MESSAGE_LENGTH, type Frame } from './frame.js';
import { decodeRequest, encodeResponse, type TtrpcRequest } from './messages.js';
import { statusOf } from './status.js';

const log = logger('ttrpc-server');

/** Per-call information a handler may use. */
export interface CallContext {
  streamId: number;
  /** Deadline the client asked for, in ms since the epoch (undefined: none). */
  deadline?: number;
  metadata: Map<string, string>;
}

export type UnaryHandler = (payload: Uint8Array, ctx: CallContext) => Promise<Uint8Array>;

/** The server half of a server-streaming call. */
export interface ServerStream {
  /**
   * Sends one message. False when the connection is gone or its write buffer
   * is past the high-water mark (the message is still queued): wait for `onDrain`.
   */
  send(payload: Uint8Array): boolean;
  /** Called each time the connection's write buffer has emptied; returns a function that stops the calls. */
  onDrain(listener: () => void): () => void;
  readonly closed: boolean;
  /** Resolves when the connection carrying this stream closes or a new client session takes it over. */
  readonly whenClosed: Promise<void>;
}

/** Resolving ends the stream with an OK response; throwing ends it with that error. */
export type StreamHandler = (payload: Uint8Array, stream: ServerStream, ctx: CallContext) => Promise<void>;

/** Bytes a connection may buffer for stream messages before senders are told to wait. */
const STREAM_HIGH_WATER = 1 << 20;

type Handler = { kind: 'unary'; fn: UnaryHandler } | { kind: 'stream'; fn: StreamHandler };

/**
 * A ttRPC server: a table of (service, method) handlers that can serve any
 * number of byte-stream connections. Nothing a peer sends can throw out of it:
 * bad requests get an error response, bad frames close the stream.
 */
export class TtrpcServer {
  private readonly handlers = new Map<string, Handler>();

  unary(service: string, method: string, fn: UnaryHandler): this {
    this.handlers.set(`${service}/${method}`, { kind: 'unary', fn });
    return this;
  }

  stream(service: string, method: string, fn: StreamHandler): this {
    this.handlers.set(`${service}/${method}`, { kind: 'stream', fn });
    return this;
  }

  /** Serves one connection until it ends; resolves when it has closed. */
  serve(conn: Duplex): Promise<void> {
    return new ServerConnection(conn, this.handlers).closed;
  }
}

/**
 * Request metadata naming the client connection a request belongs to. Over a
 * transport that can change hands without the server noticing (a
 * virtio-serial port: the host may reconnect before the guest reads the
 * EOF), a request with a new session starts a fresh session on the same
 * byte stream: the old session's streams end and its late replies are dropped.
 */
export const SESSION_METADATA_KEY = 'ttrpc-session';

class Session {
  readonly active = new Set<number>();
  ended = false;
  readonly whenEnded: Promise<void>;
  private markEnded!: () => void;

  constructor(readonly id: string | undefined) {
    this.whenEnded = new Promise((resolve) => { this.markEnded = resolve; });
  }

  end(): void {
    this.ended = true;
    this.markEnded();
  }
}

class ServerConnection {
  readonly closed: Promise<void>;
  private session = new Session(undefined);
  private isClosed = false;
  private markClosed!: () => void;

  constructor(readonly conn: Duplex, private readonly handlers: Map<string, Handler>) {
    this.closed = new Promise((resolve) => { this.markClosed = resolve; });
    const decoder = new FrameDecoder(
      (frame) => this.onFrame(frame),
      (big) => {
        log.warn({ streamId: big.streamId, length: big.length }, 'refused oversized frame');
        if (big.type === FrameType.Request) {
          this.reply(this.session, big.streamId, resourceExhausted(`request of ${big.length} bytes exceeds the ${MAX_MESSAGE_LENGTH}-byte ttRPC limit`));
        }
      },
    );
    // A throw out of a 'data' listener would be an uncaught exception: end this connection instead.
    conn.on('data', (chunk: Buffer) => {
      if (this.isClosed) return;
      try {
        decoder.push(chunk);
      } catch (err) {
        log.warn({ err: messageOf(err) }, 'closing a connection after a protocol error');
        this.close();
      }
    });
    conn.on('error', (err) => log.debug({ err: messageOf(err) }, 'connection error'));
    conn.on('close', () => this.close());
    conn.on('end', () => this.close());
  }

  private close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.session.end();
    this.conn.destroy();
    this.markClosed();
  }

  private onFrame(frame: Frame): void {
    if (frame.type !== FrameType.Request) {
      // Client data frames are not part of this API (stdin travels as an RPC).
      if (frame.type !== FrameType.Data) log.warn({ type: frame.type, streamId: frame.streamId }, 'ignoring frame of unknown type');
      return;
    }
    if (frame.streamId % 2 === 0) {
      this.reply(this.session, frame.streamId, invalidArgument(`stream id ${frame.streamId} is not a client stream id (odd)`));
      return;
    }
    let req: TtrpcRequest;
    try {
      req = decodeRequest(frame.payload);
    } catch (err) {
      this.reply(this.session, frame.streamId, invalidArgument(`malformed ttRPC request: ${messageOf(err)}`));
      return;
    }
    const metadata = new Map(req.metadata.map((kv) => [kv.key, kv.value]));
    const sessionId = metadata.get(SESSION_METADATA_KEY);
    if (sessionId !== undefined && sessionId !== this.session.id) {
      if (this.session.id !== undefined) log.info('a new client session took over the connection');
      this.session.end();
      this.session = new Session(sessionId);
    }
    const session = this.session;
    if (session.active.has(frame.streamId)) {
      this.reply(session, frame.streamId, invalidArgument(`stream id ${frame.streamId} is already in use`));
      return;
    }
    const handler = this.handlers.get(`${req.service}/${req.method}`);
    if (!handler) {
      this.reply(session, frame.streamId, unimplemented(`unknown method ${req.service}/${req.method}`));
      return;
    }
    const ctx: CallContext = {
      streamId: frame.streamId,
      deadline: req.timeoutNano > 0 ? Date.now() + req.timeoutNano / 1e6 : undefined,
      metadata,
    };
    session.active.add(frame.streamId);
    const run = handler.kind === 'unary'
      ? handler.fn(req.payload, ctx).then((payload) => this.reply(session, frame.streamId, undefined, payload))
      : handler.fn(req.payload, this.serverStream(session, frame.streamId), ctx).then(() => this.reply(session, frame.streamId));
    run.catch((err) => this.reply(session, frame.streamId, err)).finally(() => session.active.delete(frame.streamId));
  }

  private serverStream(session: Session, streamId: number): ServerStream {
    const conn = this;
    return {
      send(payload) {
        if (session.ended) return false;
        return conn.write(encodeFrame(streamId, FrameType.Data, 0, payload)) && conn.conn.writableLength < STREAM_HIGH_WATER;
      },
      onDrain(listener) {
        conn.conn.on('drain', listener);
        return () => conn.conn.off('drain', listener);
      },
      get closed() { return session.ended; },
      whenClosed: session.whenEnded,
    };
  }

  private reply(session: Session, streamId: number, err?: unknown, payload: Uint8Array = new Uint8Array()): void {
    // A reply for a session that has ended would land on a stream id the new client may be using.
    if (this.isClosed || session.ended) return;
    const status = err === undefined ? { code: 0, message: '' } : statusOf(err);
    if (err !== undefined && status.code === 13) log.error({ err: messageOf(err), streamId }, 'handler failed');
    let body = encodeResponse({ status, payload });
    if (body.length > MAX_MESSAGE_LENGTH) {
      body = encodeResponse({ status: statusOf(resourceExhausted(`response of ${body.length} bytes exceeds the ttRPC limit`)), payload: new Uint8Array() });
    }
    this.write(encodeFrame(streamId, FrameType.Response, 0, body));
  }

  /** Queues a frame; false only when the connection can no longer carry it. */
  private write(frame: Buffer): boolean {
    if (this.conn.destroyed || this.conn.writableEnded) return false;
    this.conn.write(frame);
    return true;
  }
}
