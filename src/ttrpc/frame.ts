/**
 * ttRPC framing: every message is a 10-byte header (u32 BE payload length,
 * u32 BE stream id, u8 type, u8 flags) followed by the payload.
 */
export const HEADER_LENGTH = 10;
/** ttRPC's message size limit; larger frames are refused, never buffered. */
export const MAX_MESSAGE_LENGTH = 4 << 20;

export const FrameType = {
  Request: 1,
  Response: 2,
  Data: 3,
} as const;

export const FrameFlag = {
  /** The sender will send nothing more on this stream. */
  RemoteClosed: 0x1,
  /** The sender will follow the request with data frames. */
  RemoteOpen: 0x2,
  /** A data frame that carries no payload (only its flags matter). */
  NoData: 0x4,
} as const;

export interface Frame {
  streamId: number;
  type: number;
  flags: number;
  payload: Buffer;
}

export function encodeFrame(streamId: number, type: number, flags: number, payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_LENGTH + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  frame.writeUInt32BE(streamId >>> 0, 4);
  frame.writeUInt8(type, 8);
  frame.writeUInt8(flags, 9);
  frame.set(payload, HEADER_LENGTH);
  return frame;
}

/** A frame whose declared length is over the limit; its payload was skipped. */
export interface OversizedFrame {
  streamId: number;
  type: number;
  flags: number;
  length: number;
}

/**
 * Incremental decoder. Bytes go in as they arrive; whole frames come out.
 * An oversized frame is reported (so the peer can get an error reply) and its
 * payload is discarded as it streams past, so it never sits in memory.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private skipping = 0;

  constructor(
    private readonly onFrame: (frame: Frame) => void,
    private readonly onOversized: (frame: OversizedFrame) => void,
    private readonly maxLength = MAX_MESSAGE_LENGTH,
  ) {}

  push(data: Buffer): void {
    if (this.skipping > 0) {
      const skip = Math.min(this.skipping, data.length);
      this.skipping -= skip;
      data = data.subarray(skip);
      if (data.length === 0) return;
    }
    this.chunks.push(data);
    this.buffered += data.length;
    this.drain();
  }

  private drain(): void {
    while (this.buffered >= HEADER_LENGTH) {
      const head = this.peek(HEADER_LENGTH);
      const length = head.readUInt32BE(0);
      const streamId = head.readUInt32BE(4);
      const type = head.readUInt8(8);
      const flags = head.readUInt8(9);
      if (length > this.maxLength) {
        this.consume(HEADER_LENGTH);
        const skipNow = Math.min(length, this.buffered);
        this.consume(skipNow);
        this.skipping = length - skipNow;
        this.onOversized({ streamId, type, flags, length });
        if (this.skipping > 0) return;
        continue;
      }
      if (this.buffered < HEADER_LENGTH + length) return;
      this.consume(HEADER_LENGTH);
      const payload = this.consume(length);
      this.onFrame({ streamId, type, flags, payload });
    }
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0].subarray(0, n);
  }

  private consume(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    const first = this.chunks[0];
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    // Copy so a retained payload does not pin the whole receive buffer.
    return Buffer.from(out);
  }
}
