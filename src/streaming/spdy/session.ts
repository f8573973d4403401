import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { logger } from '../../log.js';
import {
  ControlType, Flag, FrameReader, MAX_DATA_CHUNK, RstStatus, SPDY_VERSION, dataHeader, encodeData, goAway, ping, rstStream, synReply, synStream, type Frame,
} from './frames.js';
import { HeaderBlockReader, HeaderBlockWriter, type Headers } from './header-block.js';

const log = logger('spdy');

/** Bytes a stream holds for a reader that has not attached yet. */
const HELD_LIMIT = 1 << 20;
/** Bytes queued on the socket past which writers are told to wait for 'drain'. */
export const WRITE_HIGH_WATER = 256 * 1024;

export interface SpdySessionOptions {
  /** Server sessions accept odd (client) stream ids; client sessions open them. */
  server: boolean;
  /** Streams the peer may have open at once. */
  maxStreams?: number;
  /** Client side: how our SYN_STREAM header blocks are compressed (tests use real zlib with the dictionary). */
  headerWriter?: { encode(headers: Record<string, string | string[]>): Buffer | Promise<Buffer> };
}

/**
 * One stream of a session. 'data' delivers the peer's bytes, 'end' its FIN,
 * 'reset' an RST_STREAM or the session going away. Writes are split into
 * data frames; there is no per-stream flow-control window (Kubernetes'
 * spdystream neither sends nor honours WINDOW_UPDATE), so backpressure is the
 * socket's: `write` returns false past the session's high-water mark.
 */
export class SpdyStream extends EventEmitter<{ data: [Buffer]; end: []; reset: [reason: string] }> {
  remoteEnded = false;
  localEnded = false;
  wasReset = false;
  /**
   * What arrived before anyone listened: a client awaiting openStream gets its
   * stream a tick after the SYN_REPLY, and data or FIN may follow in the same read.
   */
  private held: Buffer[] = [];
  private heldBytes = 0;
  private heldEnd = false;

  constructor(private readonly session: SpdySession, readonly id: number, readonly headers: Headers) {
    super();
    (this as EventEmitter).on('newListener', (event: string) => {
      if ((event === 'data' && this.held.length) || (event === 'end' && this.heldEnd)) queueMicrotask(() => this.flushHeld());
    });
  }

  /** @internal */
  deliver(data: Buffer): void {
    if (this.listenerCount('data') > 0 && this.held.length === 0) {
      this.emit('data', data);
      return;
    }
    // Nobody reads this stream (yet): keep a bounded amount, then refuse the stream.
    this.heldBytes += data.length;
    if (this.heldBytes > HELD_LIMIT) {
      this.reset(RstStatus.Cancel);
      return;
    }
    this.held.push(data);
  }

  private flushHeld(): void {
    if (this.listenerCount('data') > 0) {
      const held = this.held;
      this.held = [];
      this.heldBytes = 0;
      for (const chunk of held) this.emit('data', chunk);
    }
    if (this.heldEnd && this.held.length === 0 && this.listenerCount('end') > 0) {
      this.heldEnd = false;
      this.emit('end');
    }
  }

  header(name: string): string | undefined {
    return this.headers.get(name.toLowerCase())?.[0];
  }

  /** Takes `data` as it is (not copied): the caller must not change it afterwards. */
  write(data: Uint8Array): boolean {
    if (this.localEnded || this.wasReset) return false;
    this.session.sendData(this.id, data);
    return this.session.writable;
  }

  /** Half-closes our side (a data frame with FIN). */
  end(data?: Uint8Array): void {
    if (this.localEnded || this.wasReset) return;
    if (data?.length) this.write(data);
    this.localEnded = true;
    this.session.send(encodeData(this.id, Flag.Fin, new Uint8Array()));
    this.session.maybeForget(this);
  }

  reset(status: number = RstStatus.Cancel): void {
    if (this.wasReset) return;
    this.session.send(rstStream(this.id, status));
    this.markReset('reset by us');
  }

  /** @internal */
  markReset(reason: string): void {
    if (this.wasReset) return;
    this.wasReset = true;
    this.session.forget(this);
    this.emit('reset', reason);
  }

  /** @internal */
  remoteFin(): void {
    if (this.remoteEnded) return;
    this.remoteEnded = true;
    if (this.held.length > 0 || this.listenerCount('end') === 0) this.heldEnd = true;
    else this.emit('end');
    this.session.maybeForget(this);
  }
}

/**
 * A SPDY/3 session on an upgraded HTTP connection: stream set-up (SYN_STREAM /
 * SYN_REPLY), data, RST_STREAM, PING (answered), GOAWAY, SETTINGS and
 * WINDOW_UPDATE (read and ignored). Anything malformed ends the session;
 * nothing the peer sends can throw out of it.
 */
export class SpdySession extends EventEmitter<{ stream: [SpdyStream]; close: [reason: string]; drain: [] }> {
  private readonly streams = new Map<number, SpdyStream>();
  private readonly pendingOpens = new Map<number, { resolve: (s: SpdyStream) => void; reject: (e: Error) => void; stream: SpdyStream }>();
  private readonly reader: FrameReader;
  private readonly headerReader = new HeaderBlockReader();
  private readonly headerWriter: { encode(headers: Record<string, string | string[]>): Buffer | Promise<Buffer> };
  /** SYN_REPLY blocks: always the synchronous stored-block writer, so replies go out in order. */
  private readonly replyWriter: HeaderBlockWriter;
  /** Header blocks must go out in the order they were compressed. */
  private headerChain: Promise<void> = Promise.resolve();
  private readonly maxStreams: number;
  private lastPeerStreamId = 0;
  private nextStreamId: number;
  private nextPingId: number;
  private readonly pings = new Map<number, () => void>();
  private closedReason: string | undefined;
  goneAway = false;

  constructor(private readonly socket: Duplex, private readonly options: SpdySessionOptions) {
    super();
    this.maxStreams = options.maxStreams ?? 1000;
    this.replyWriter = new HeaderBlockWriter();
    this.headerWriter = options.headerWriter ?? this.replyWriter;
    this.nextStreamId = options.server ? 2 : 1;
    this.nextPingId = options.server ? 2 : 1;
    this.reader = new FrameReader((frame) => this.onFrame(frame), (message) => this.fail(message));
    socket.on('data', (chunk: Buffer) => this.reader.push(chunk));
    socket.on('drain', () => this.emit('drain'));
    socket.on('error', (err) => this.shutdown(`connection error: ${err.message}`));
    // The HTTP server keeps upgraded sockets half-open: end our side too, or the fd stays.
    socket.on('end', () => {
      socket.end();
      this.shutdown('connection closed by the peer');
    });
    socket.on('close', () => this.shutdown('connection closed'));
  }

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  get writable(): boolean {
    return !this.closed && this.socket.writableLength < WRITE_HIGH_WATER;
  }

  /** Bytes written but not yet taken by the kernel. */
  queuedBytes(): number {
    return this.socket.writableLength;
  }

  /** Calls `listener` once the session has closed (at once if it already has). */
  whenClosed(listener: (reason: string) => void): void {
    if (this.closedReason !== undefined) queueMicrotask(() => listener(this.closedReason!));
    else this.once('close', listener);
  }

  get openStreams(): number {
    return this.streams.size;
  }

  /** Feeds bytes that arrived with the HTTP upgrade request. */
  push(head: Buffer): void {
    if (head.length) this.reader.push(head);
  }

  /** Stops (or resumes) reading from the peer: backpressure for its data. */
  pauseReading(paused: boolean): void {
    if (paused) this.socket.pause();
    else this.socket.resume();
  }

  /** Client side: opens a stream and waits for the peer's SYN_REPLY. */
  openStream(headers: Record<string, string | string[]>, fin = false): Promise<SpdyStream> {
    if (this.closed || this.goneAway) return Promise.reject(new Error(`session is closed: ${this.closedReason ?? 'went away'}`));
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    const stream = new SpdyStream(this, id, new Map(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), Array.isArray(v) ? v : [v]])));
    this.streams.set(id, stream);
    if (fin) stream.localEnded = true;
    return new Promise((resolve, reject) => {
      this.pendingOpens.set(id, { resolve, reject, stream });
      this.headerChain = this.headerChain.then(async () => {
        this.send(synStream(id, fin ? Flag.Fin : 0, await this.headerWriter.encode(headers)));
      }).catch((e) => this.fail(`cannot encode headers: ${(e as Error).message}`));
    });
  }

  /** Round trip to the peer. */
  ping(): Promise<void> {
    const id = this.nextPingId;
    this.nextPingId += 2;
    return new Promise((resolve) => {
      this.pings.set(id, resolve);
      this.send(ping(id));
    });
  }

  /** Says goodbye (GOAWAY) and closes the connection once what is queued is written. */
  close(reason = 'closed'): void {
    if (this.closed) return;
    this.send(goAway(this.lastPeerStreamId));
    this.socket.end();
    this.shutdown(reason);
  }

  /** Drops the connection at once. */
  destroy(reason: string): void {
    this.socket.destroy();
    this.shutdown(reason);
  }

  /** @internal */
  send(frame: Buffer): void {
    if (this.closed || this.socket.destroyed || this.socket.writableEnded) return;
    this.socket.write(frame);
  }

  /** @internal Data frames of at most MAX_DATA_CHUNK: each header and its payload go out in one gathered write, uncopied. */
  sendData(streamId: number, data: Uint8Array): void {
    if (this.closed || this.socket.destroyed || this.socket.writableEnded || data.length === 0) return;
    this.socket.cork();
    for (let at = 0; at < data.length; at += MAX_DATA_CHUNK) {
      const piece = data.subarray(at, at + MAX_DATA_CHUNK);
      this.socket.write(dataHeader(streamId, 0, piece.length));
      this.socket.write(piece);
    }
    this.socket.uncork();
  }

  /** @internal */
  forget(stream: SpdyStream): void {
    this.streams.delete(stream.id);
  }

  /** @internal */
  maybeForget(stream: SpdyStream): void {
    if (stream.localEnded && stream.remoteEnded) this.streams.delete(stream.id);
  }

  private onFrame(frame: Frame): void {
    if (this.closed) return;
    try {
      if (frame.kind === 'data') this.onData(frame.streamId, frame.flags, frame.data);
      else this.onControl(frame.type, frame.version, frame.flags, frame.payload);
    } catch (err) {
      this.fail(`bad frame: ${(err as Error).message}`);
    }
  }

  private onData(streamId: number, flags: number, data: Buffer): void {
    const stream = this.streams.get(streamId);
    if (!stream) {
      // Late data for a stream we reset or finished: not an error worth the session.
      return;
    }
    if (stream.remoteEnded) {
      stream.reset(RstStatus.StreamAlreadyClosed);
      return;
    }
    if (data.length) stream.deliver(data);
    if (flags & Flag.Fin) stream.remoteFin();
  }

  private onControl(type: number, version: number, flags: number, payload: Buffer): void {
    if (version !== SPDY_VERSION) throw new Error(`SPDY version ${version} is not supported (only ${SPDY_VERSION})`);
    switch (type) {
      case ControlType.SynStream: return this.onSynStream(flags, payload);
      case ControlType.SynReply: return this.onSynReply(flags, payload);
      case ControlType.RstStream: {
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        const status = payload.readUInt32BE(4);
        const pending = this.pendingOpens.get(id);
        if (pending) {
          this.pendingOpens.delete(id);
          pending.reject(new Error(`stream refused (status ${status})`));
        }
        this.streams.get(id)?.markReset(`reset by the peer (status ${status})`);
        return;
      }
      case ControlType.Ping: {
        const id = payload.readUInt32BE(0);
        const ours = this.pings.get(id);
        if (ours) {
          this.pings.delete(id);
          ours();
        } else if ((id & 1) !== (this.nextPingId & 1)) {
          this.send(ping(id)); // the peer's ping: echo it
        }
        return;
      }
      case ControlType.GoAway:
        this.goneAway = true;
        return;
      case ControlType.Headers: {
        // Extra headers on a stream: decode (the zlib context must advance) and ignore.
        this.headerReader.decode(payload.subarray(4));
        if (flags & Flag.Fin) this.streams.get(payload.readUInt32BE(0) & 0x7fffffff)?.remoteFin();
        return;
      }
      case ControlType.Settings:
      case ControlType.WindowUpdate:
        return; // no flow-control windows: see SpdyStream
      default:
        log.debug({ type }, 'ignoring unknown control frame');
    }
  }

  private onSynStream(flags: number, payload: Buffer): void {
    if (payload.length < 10) throw new Error('SYN_STREAM is truncated');
    const id = payload.readUInt32BE(0) & 0x7fffffff;
    // Headers first: the zlib context must advance even for a stream we refuse.
    const headers = this.headerReader.decode(payload.subarray(10));
    const peerParity = this.options.server ? 1 : 0;
    if (id === 0 || (id & 1) !== peerParity || id <= this.lastPeerStreamId) {
      this.send(rstStream(id, RstStatus.ProtocolError));
      return;
    }
    this.lastPeerStreamId = id;
    if (this.goneAway || this.streams.size >= this.maxStreams) {
      this.send(rstStream(id, RstStatus.RefusedStream));
      return;
    }
    const stream = new SpdyStream(this, id, headers);
    this.streams.set(id, stream);
    // Accept at once, as Kubernetes' servers do; the handler may still reset it.
    this.send(synReply(id, 0, this.replyWriter.encode({})));
    if (flags & Flag.Unidirectional) stream.localEnded = true;
    this.emit('stream', stream);
    if (flags & Flag.Fin) stream.remoteFin();
  }

  private onSynReply(flags: number, payload: Buffer): void {
    const id = payload.readUInt32BE(0) & 0x7fffffff;
    this.headerReader.decode(payload.subarray(4));
    const pending = this.pendingOpens.get(id);
    if (!pending) return;
    this.pendingOpens.delete(id);
    pending.resolve(pending.stream);
    if (flags & Flag.Fin) pending.stream.remoteFin();
  }

  private fail(message: string): void {
    log.debug({ err: message }, 'SPDY session failed');
    this.send(goAway(this.lastPeerStreamId, 1));
    this.destroy(message);
  }

  private shutdown(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    for (const p of this.pendingOpens.values()) p.reject(new Error(`session closed: ${reason}`));
    this.pendingOpens.clear();
    for (const stream of [...this.streams.values()]) stream.markReset(`session closed: ${reason}`);
    for (const resolve of this.pings.values()) resolve();
    this.pings.clear();
    this.emit('close', reason);
  }
}
