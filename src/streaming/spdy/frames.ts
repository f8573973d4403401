/**
 * SPDY/3 framing (draft 3; "SPDY/3.1" is what Kubernetes names the upgrade).
 * A control frame: 1 bit set, 15-bit version (3), 16-bit type, 8-bit flags,
 * 24-bit length. A data frame: 1 bit clear, 31-bit stream id, 8-bit flags,
 * 24-bit length. All integers big-endian.
 */
export const SPDY_VERSION = 3;
export const FRAME_HEADER_LENGTH = 8;
/** The largest frame podvisor accepts (the 24-bit length allows 16 MiB); larger ones end the session. */
export const MAX_FRAME_LENGTH = 1 << 20;
/**
 * What podvisor puts in one data frame: the largest piece the guest hands over
 * (a 64 KiB pipe or socket read) goes out as one frame. Peers accept any length
 * up to the 24-bit limit (Go's spdy framer and spdystream do).
 */
export const MAX_DATA_CHUNK = 64 * 1024;

export const ControlType = {
  SynStream: 1,
  SynReply: 2,
  RstStream: 3,
  Settings: 4,
  Ping: 6,
  GoAway: 7,
  Headers: 8,
  WindowUpdate: 9,
} as const;

export const Flag = {
  Fin: 0x01,
  Unidirectional: 0x02,
} as const;

export const RstStatus = {
  ProtocolError: 1,
  InvalidStream: 2,
  RefusedStream: 3,
  Cancel: 5,
  InternalError: 6,
  StreamInUse: 8,
  StreamAlreadyClosed: 9,
  FrameTooLarge: 11,
} as const;

export type Frame =
  | { kind: 'data'; streamId: number; flags: number; data: Buffer }
  | { kind: 'control'; type: number; version: number; flags: number; payload: Buffer };

/** The 8 bytes before a data frame's payload (written separately, so the payload is not copied). */
export function dataHeader(streamId: number, flags: number, length: number): Buffer {
  const head = Buffer.allocUnsafe(FRAME_HEADER_LENGTH);
  head.writeUInt32BE(streamId & 0x7fffffff, 0);
  head.writeUInt32BE(((flags & 0xff) << 24 | length) >>> 0, 4);
  return head;
}

export function encodeData(streamId: number, flags: number, data: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + data.length);
  frame.writeUInt32BE(streamId & 0x7fffffff, 0);
  frame.writeUInt32BE(((flags & 0xff) << 24 | data.length) >>> 0, 4);
  frame.set(data, FRAME_HEADER_LENGTH);
  return frame;
}

export function encodeControl(type: number, flags: number, payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + payload.length);
  frame.writeUInt16BE(0x8000 | SPDY_VERSION, 0);
  frame.writeUInt16BE(type, 2);
  frame.writeUInt32BE(((flags & 0xff) << 24 | payload.length) >>> 0, 4);
  frame.set(payload, FRAME_HEADER_LENGTH);
  return frame;
}

export function synStream(streamId: number, flags: number, headerBlock: Buffer, associatedTo = 0, priority = 0): Buffer {
  const head = Buffer.alloc(10);
  head.writeUInt32BE(streamId & 0x7fffffff, 0);
  head.writeUInt32BE(associatedTo & 0x7fffffff, 4);
  head.writeUInt8((priority & 0x7) << 5, 8);
  return encodeControl(ControlType.SynStream, flags, Buffer.concat([head, headerBlock]));
}

export function synReply(streamId: number, flags: number, headerBlock: Buffer): Buffer {
  return encodeControl(ControlType.SynReply, flags, Buffer.concat([u32(streamId & 0x7fffffff), headerBlock]));
}

export function rstStream(streamId: number, status: number): Buffer {
  return encodeControl(ControlType.RstStream, 0, Buffer.concat([u32(streamId & 0x7fffffff), u32(status)]));
}

export function ping(id: number): Buffer {
  return encodeControl(ControlType.Ping, 0, u32(id));
}

export function goAway(lastGoodStreamId: number, status = 0): Buffer {
  return encodeControl(ControlType.GoAway, 0, Buffer.concat([u32(lastGoodStreamId & 0x7fffffff), u32(status)]));
}

function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0);
  return b;
}

/**
 * Incremental frame reader. Bytes go in as they arrive, whole frames come out.
 * A frame over `maxLength` is reported through `onError` and ends decoding: it
 * is never buffered. Received chunks are kept in a list until a frame is
 * complete (no copying per arrival); a payload that lies inside one chunk is a
 * view of it unless it is small beside that chunk (then it is copied, so a
 * retained payload never pins more than a few times its own size).
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failed = false;

  constructor(
    private readonly onFrame: (frame: Frame) => void,
    private readonly onError: (message: string) => void,
    private readonly maxLength = MAX_FRAME_LENGTH,
  ) {}

  push(chunk: Buffer): void {
    if (this.failed || chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= FRAME_HEADER_LENGTH && !this.failed) {
      const head = this.peek(FRAME_HEADER_LENGTH);
      const word = head.readUInt32BE(4);
      const flags = word >>> 24;
      const length = word & 0xffffff;
      if (length > this.maxLength) {
        this.failed = true;
        this.chunks = [];
        this.buffered = 0;
        this.onError(`frame of ${length} bytes is over the ${this.maxLength}-byte limit`);
        return;
      }
      if (this.buffered < FRAME_HEADER_LENGTH + length) return;
      const first = head.readUInt32BE(0);
      this.take(FRAME_HEADER_LENGTH);
      const payload = this.take(length);
      if (first & 0x80000000) {
        this.onFrame({ kind: 'control', version: (first >>> 16) & 0x7fff, type: first & 0xffff, flags, payload });
      } else {
        this.onFrame({ kind: 'data', streamId: first & 0x7fffffff, flags, data: payload });
      }
    }
  }

  /** The first `n` buffered bytes, without consuming them. */
  private peek(n: number): Buffer {
    const head = this.chunks[0]!;
    if (head.length >= n) return head.subarray(0, n);
    return Buffer.concat(this.chunks, this.buffered).subarray(0, n);
  }

  /** Consumes `n` buffered bytes (all present). */
  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    this.buffered -= n;
    const head = this.chunks[0]!;
    if (head.length >= n) {
      const piece = head.subarray(0, n);
      if (head.length === n) this.chunks.shift();
      else this.chunks[0] = head.subarray(n);
      // A small piece of a large read is copied so that keeping it does not keep the whole read.
      return n * 4 >= head.buffer.byteLength ? piece : Buffer.from(piece);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0]!;
      const use = Math.min(c.length, n - at);
      c.copy(out, at, 0, use);
      at += use;
      if (use === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(use);
    }
    return out;
  }
}
