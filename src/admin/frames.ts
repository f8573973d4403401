import { invalidArgument } from '../errors.js';

/**
 * Framing of an interactive session on the admin socket (after the HTTP
 * upgrade): [type u8][length u32 BE][payload]. The CLI sends stdin, resize and
 * stdin-close; the daemon sends stdout, stderr, exit and error.
 */
export const FRAME = {
  stdin: 1,
  stdout: 2,
  stderr: 3,
  /** JSON { rows, cols } */
  resize: 4,
  closeStdin: 5,
  /** JSON { exitCode } — the last frame of a session that ran */
  exit: 6,
  /** UTF-8 message — the last frame of a session that failed */
  error: 7,
} as const;

export type FrameType = (typeof FRAME)[keyof typeof FRAME];

/** Larger frames are a broken or hostile peer; stdin and output chunks are far smaller. */
export const MAX_FRAME_BYTES = 1024 * 1024;

export function encodeFrame(type: FrameType, payload: Uint8Array | string = new Uint8Array()): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload);
  const header = Buffer.alloc(5);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(body.length, 1);
  return Buffer.concat([header, body]);
}

/** Splits a byte stream into frames; throws on a frame over the bound. */
export class FrameDecoder {
  private buffered: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Array<{ type: number; payload: Buffer }> {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    const frames: Array<{ type: number; payload: Buffer }> = [];
    while (this.buffered.length >= 5) {
      const length = this.buffered.readUInt32BE(1);
      if (length > MAX_FRAME_BYTES) throw invalidArgument(`session frame of ${length} bytes is over the ${MAX_FRAME_BYTES} byte limit`);
      if (this.buffered.length < 5 + length) break;
      frames.push({ type: this.buffered.readUInt8(0), payload: this.buffered.subarray(5, 5 + length) });
      this.buffered = this.buffered.subarray(5 + length);
    }
    return frames;
  }
}
