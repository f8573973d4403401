import { constants } from 'node:fs';
import { lstat, mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { nowNanosBig, rfc3339Nano } from './clock.js';
import { logger } from '../log.js';
import type { OutputThrottle } from './output-throttle.js';

const log = logger('cri-log');

export type LogStream = 'stdout' | 'stderr';

/** kubelet's default max log line (containerd `max_container_log_line_size`). */
export const MAX_LOG_LINE = 16 * 1024;

const NEWLINE = 0x0a;
const CR = 0x0d;
const TAG_FULL = 0x46; // 'F'
const TAG_PARTIAL = 0x50; // 'P'

/** Records of one write, built into one buffer: `<prefix><tag> <text>\n` each. */
class RecordBuilder {
  private buf: Buffer;
  length = 0;

  constructor(private readonly prefix: Buffer, hint: number) {
    this.buf = Buffer.allocUnsafe(hint + 4 * (prefix.length + 3));
  }

  add(tag: number, src: Buffer, start: number, end: number): void {
    const need = this.prefix.length + 3 + (end - start);
    if (this.length + need > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.length + need));
      this.buf.copy(grown, 0, 0, this.length);
      this.buf = grown;
    }
    const b = this.buf;
    let at = this.length + this.prefix.copy(b, this.length);
    b[at++] = tag;
    b[at++] = 0x20;
    if (end > start) at += src.copy(b, at, start, end);
    b[at++] = NEWLINE;
    this.length = at;
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

/**
 * Writes container output in kubelet's CRI log format,
 * `<RFC3339Nano> <stdout|stderr> <P|F> <text>\n`, one record per line.
 *
 * Each stream keeps its own unfinished line until its newline arrives; a line
 * longer than `maxLine` is cut into `P` (partial) records of `maxLine` bytes and
 * its last piece is the `F` record. At end of stream an unfinished line is
 * written as `F`, as containerd does.
 *
 * Every file operation runs on one promise chain, so `reopen()` (kubelet's log
 * rotation: it renames the file, then asks for a new one) slots in between two
 * records: output that arrives meanwhile waits in memory and lands in the new
 * file, and no line is lost or split across files.
 */
export class CriLogWriter {
  private file: FileHandle | undefined;
  private chain: Promise<void> = Promise.resolve();
  private readonly pending: Record<LogStream, Buffer[]> = { stdout: [], stderr: [] };
  private readonly pendingBytes: Record<LogStream, number> = { stdout: 0, stderr: 0 };
  private closed = false;
  private failure: Error | undefined;
  private queued = 0;

  private constructor(
    readonly path: string,
    private readonly maxLine: number,
    private readonly now: () => bigint,
    private readonly throttle: OutputThrottle | undefined,
  ) {}

  /**
   * Opens (creating, appending) the log file; the directory is created if kubelet has not yet.
   * `throttle` is told about every byte queued and written (the sandbox's backpressure).
   */
  static async open(path: string, opts: { maxLine?: number; now?: () => bigint; throttle?: OutputThrottle } = {}): Promise<CriLogWriter> {
    const w = new CriLogWriter(path, opts.maxLine ?? MAX_LOG_LINE, opts.now ?? nowNanosBig, opts.throttle);
    w.file = await openLog(path);
    return w;
  }

  /**
   * Adds output from one stream; complete lines are queued for the file at once.
   *
   * Cost is O(bytes) with a small constant per line: lines are found with the
   * native indexOf, every record of the chunk is copied into one growing
   * buffer, and the chunk's records share one timestamp (H2: a container
   * printing empty lines must not cost the daemon a string and three buffers
   * per line).
   */
  write(stream: LogStream, data: Uint8Array): void {
    if (this.closed) return;
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const out = new RecordBuilder(Buffer.from(`${rfc3339Nano(this.now())} ${stream} `), buf.length);
    let pos = 0;
    while (pos < buf.length) {
      const room = this.maxLine - this.pendingBytes[stream];
      // Search no further than the line can reach, so a chunk without newlines costs O(bytes), not O(bytes²/maxLine).
      const window = buf.subarray(pos, Math.min(buf.length, pos + room + 1));
      const found = window.indexOf(NEWLINE);
      if (found !== -1) {
        const nl = pos + found;
        if (this.pendingBytes[stream] === 0) {
          // The common case: the whole line is in this chunk; copy it straight into the output.
          const end = nl > pos && buf[nl - 1] === CR ? nl - 1 : nl;
          out.add(TAG_FULL, buf, pos, end);
        } else {
          this.take(stream, buf.subarray(pos, nl));
          const text = this.drain(stream, true);
          out.add(TAG_FULL, text, 0, text.length);
        }
        pos = nl + 1;
      } else if (buf.length - pos >= room) {
        // The line reaches maxLine before its end: the first maxLine bytes become a P record.
        this.take(stream, buf.subarray(pos, pos + room));
        const text = this.drain(stream, false);
        out.add(TAG_PARTIAL, text, 0, text.length);
        pos += room;
      } else {
        this.take(stream, buf.subarray(pos));
        break;
      }
    }
    if (out.length > 0) this.enqueue(out.bytes());
  }

  /** The stream has ended: its unfinished line, if any, becomes an F record. */
  endStream(stream: LogStream): void {
    if (this.pendingBytes[stream] === 0) return;
    const text = this.drain(stream, true);
    const out = new RecordBuilder(Buffer.from(`${rfc3339Nano(this.now())} ${stream} `), text.length);
    out.add(TAG_FULL, text, 0, text.length);
    this.enqueue(out.bytes());
  }

  /** Bytes formatted but not yet in the file. */
  get queuedBytes(): number {
    return this.queued;
  }

  /** Closes the current file and opens `path` anew (after kubelet renamed it away). */
  reopen(): Promise<void> {
    const step = this.chain.then(async () => {
      if (this.closed) return;
      const old = this.file;
      this.file = await openLog(this.path);
      await old?.close();
    });
    this.chain = step.catch((e) => this.fail(e));
    return step;
  }

  /** Resolves when everything written so far is in the file. */
  async flush(): Promise<void> {
    await this.chain;
    if (this.failure) throw this.failure;
  }

  /** Writes unfinished lines of both streams and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.endStream('stdout');
    this.endStream('stderr');
    this.closed = true;
    this.chain = this.chain.then(async () => {
      await this.file?.close();
      this.file = undefined;
    });
    await this.chain;
  }

  private take(stream: LogStream, piece: Buffer): void {
    if (piece.length === 0) return;
    // Copy: the caller's buffer may be reused by the stream that produced it.
    this.pending[stream].push(Buffer.from(piece));
    this.pendingBytes[stream] += piece.length;
  }

  private drain(stream: LogStream, lineEnded: boolean): Buffer {
    let text = Buffer.concat(this.pending[stream]);
    this.pending[stream] = [];
    this.pendingBytes[stream] = 0;
    // A CRLF line ending is one line end (bufio.ReadLine drops "\r\n" too).
    if (lineEnded && text.length > 0 && text[text.length - 1] === CR) text = text.subarray(0, text.length - 1);
    return text;
  }

  private enqueue(bytes: Buffer): void {
    this.queued += bytes.length;
    this.throttle?.add(bytes.length);
    this.chain = this.chain
      .then(async () => {
        if (this.file) await this.file.write(bytes);
      })
      .catch((e) => this.fail(e))
      .finally(() => {
        this.queued -= bytes.length;
        this.throttle?.done(bytes.length);
      });
  }

  private fail(e: unknown): void {
    // A full disk or a vanished directory must not crash the daemon; the error is kept for flush().
    this.failure = e instanceof Error ? e : new Error(String(e));
    log.warn({ path: this.path, err: this.failure.message }, 'writing container log failed');
  }
}

/**
 * Opens the log for appending without following a symlink at its last
 * component (M2: a planted symlink must not redirect root's writes), and
 * refuses a directory on the way that is a symlink below the one kubelet made.
 */
async function openLog(path: string): Promise<FileHandle> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  if ((await lstat(dir)).isSymbolicLink()) throw new Error(`log directory ${dir} is a symlink; refusing to write through it`);
  return open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o640);
}
