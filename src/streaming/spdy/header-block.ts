import zlib from 'node:zlib';
import { SPDY3_DICTIONARY } from './dictionary.js';

/**
 * SPDY/3 header blocks. Uncompressed, a block is a 32-bit pair count, then per
 * pair a 32-bit name length, the name (lower case), a 32-bit value length and
 * the value (several values joined by NUL). On the wire each direction of a
 * session is ONE zlib stream (seeded with the SPDY/3 dictionary), each block
 * ending at a sync flush.
 */
export type Headers = Map<string, string[]>;

/** Limit on the compressed header bytes one session may send us, so headers cannot grow memory without bound. */
export const MAX_HEADER_HISTORY = 1 << 20;
/** Limit on one inflated block. */
const MAX_BLOCK = 64 * 1024;

export function encodeHeaderPairs(headers: Record<string, string | string[]>): Buffer {
  const entries = Object.entries(headers);
  const parts: Buffer[] = [u32(entries.length)];
  for (const [name, value] of entries) {
    const n = Buffer.from(name.toLowerCase(), 'utf8');
    const v = Buffer.from(Array.isArray(value) ? value.join('\0') : value, 'utf8');
    parts.push(u32(n.length), n, u32(v.length), v);
  }
  return Buffer.concat(parts);
}

export function decodeHeaderPairs(block: Buffer): Headers {
  const headers: Headers = new Map();
  let at = 0;
  const read = (): Buffer => {
    if (at + 4 > block.length) throw new Error('header block is truncated');
    const length = block.readUInt32BE(at);
    at += 4;
    if (at + length > block.length) throw new Error('header block is truncated');
    const bytes = block.subarray(at, at + length);
    at += length;
    return bytes;
  };
  if (block.length < 4) throw new Error('header block is truncated');
  const count = block.readUInt32BE(0);
  at = 4;
  if (count > 1024) throw new Error(`header block claims ${count} headers`);
  for (let i = 0; i < count; i++) {
    const name = read().toString('utf8').toLowerCase();
    const values = read().toString('utf8').split('\0');
    headers.set(name, [...(headers.get(name) ?? []), ...values]);
  }
  return headers;
}

/**
 * Reads the peer's compressed header blocks. zlib keeps one context per
 * direction, which Node only offers asynchronously; header blocks are few and
 * small (a handful per exec, two per forwarded connection), so this inflates
 * the whole history again each time, synchronously, and keeps the new tail.
 * The history is bounded (MAX_HEADER_HISTORY).
 */
export class HeaderBlockReader {
  private history: Buffer[] = [];
  private historyBytes = 0;
  private produced = 0;

  decode(compressed: Buffer): Headers {
    this.historyBytes += compressed.length;
    if (this.historyBytes > MAX_HEADER_HISTORY) throw new Error(`peer sent over ${MAX_HEADER_HISTORY} bytes of headers`);
    this.history.push(compressed);
    const all = Buffer.concat(this.history);
    this.history = [all];
    const out = zlib.inflateSync(all, { dictionary: SPDY3_DICTIONARY, finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: this.produced + MAX_BLOCK });
    const block = out.subarray(this.produced);
    this.produced = out.length;
    return decodeHeaderPairs(block);
  }
}

/**
 * Writes our header blocks as one valid zlib stream made of stored
 * (uncompressed) deflate blocks, each byte-aligned like a sync flush. Every
 * inflater reads it (the dictionary is simply never referred to), and it
 * needs no asynchronous zlib context. Our blocks are tiny and rare.
 */
export class HeaderBlockWriter {
  private started = false;

  encode(headers: Record<string, string | string[]>): Buffer {
    const plain = encodeHeaderPairs(headers);
    const parts: Buffer[] = [];
    if (!this.started) {
      // zlib header: deflate, 32 KiB window, no preset dictionary; (0x78 << 8 | 0x01) % 31 == 0.
      parts.push(Buffer.from([0x78, 0x01]));
      this.started = true;
    }
    for (let at = 0; at < plain.length || at === 0; at += 0xffff) {
      const piece = plain.subarray(at, at + 0xffff);
      const head = Buffer.alloc(5);
      head.writeUInt8(0, 0); // BFINAL=0, BTYPE=00 (stored), padded to the byte
      head.writeUInt16LE(piece.length, 1);
      head.writeUInt16LE(~piece.length & 0xffff, 3);
      parts.push(head, piece);
      if (plain.length === 0) break;
    }
    // End with an empty stored block, as zlib's sync flush does: Go's inflater hands out a stored
    // block's bytes only once it has seen the next block header, so without this marker inside the
    // frame it reads past the frame and fails the session (crictl then reports "Timeout occurred").
    parts.push(SYNC_MARKER);
    return Buffer.concat(parts);
  }
}

const SYNC_MARKER = Buffer.from([0x00, 0x00, 0x00, 0xff, 0xff]);

function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0);
  return b;
}

export function header(headers: Headers, name: string): string | undefined {
  return headers.get(name.toLowerCase())?.[0];
}
