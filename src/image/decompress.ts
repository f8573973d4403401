import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Decompress as ZstdDecompress } from 'fzstd';
import { failedPrecondition, messageOf } from '../errors.js';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

export type Encoding = 'gzip' | 'zstd' | 'none';

/** Encoding of a layer from its first bytes (media types can lie, e.g. in docker-archive tarballs). */
export function sniffEncoding(head: Uint8Array): Encoding {
  const starts = (magic: number[]) => magic.every((b, i) => head[i] === b);
  if (starts(GZIP_MAGIC)) return 'gzip';
  if (starts(ZSTD_MAGIC)) return 'zstd';
  return 'none';
}

/**
 * The decoded bytes of a layer blob, as a stream: gzip via zlib, zstd via fzstd's streaming
 * decoder, plain tar passed through. Nothing is buffered beyond the chunk in hand.
 */
export async function* decodeLayer(source: AsyncIterable<Uint8Array>, what: string): AsyncGenerator<Buffer> {
  const it = source[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  let ended = false;
  while (head.length < ZSTD_MAGIC.length) {
    const r = await it.next();
    if (r.done) { ended = true; break; }
    head = Buffer.concat([head, r.value]);
  }
  async function* all(): AsyncGenerator<Buffer> {
    try {
      if (head.length > 0) yield head;
      if (ended) return;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      }
    } finally {
      // stopping early (a bad layer) must close the source: a file descriptor or a socket
      if (!ended) await it.return?.();
    }
  }
  const encoding = sniffEncoding(head);
  try {
    if (encoding === 'gzip') {
      const gunzip = createGunzip();
      const feeding = pipeline(Readable.from(all()), gunzip);
      feeding.catch(() => {}); // surfaced through the iteration below
      for await (const chunk of gunzip as AsyncIterable<Buffer>) yield chunk;
      await feeding;
    } else if (encoding === 'zstd') {
      let out: Buffer[] = [];
      const decoder = new ZstdDecompress((data) => { out.push(Buffer.from(data)); });
      for await (const chunk of all()) {
        decoder.push(chunk);
        const ready = out;
        out = [];
        yield* ready;
      }
      decoder.push(new Uint8Array(0), true);
      yield* out;
    } else {
      yield* all();
    }
  } catch (e) {
    if (e instanceof Error && e.name === 'PodvisorError') throw e;
    throw failedPrecondition(`${what}: cannot decode ${encoding} data: ${messageOf(e)}`, e);
  }
}
