import { constants } from 'node:fs';
import { lstat, mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { nowNanosBig, rfc3339Nano } from './clock.js';
import { logger } from '../log.js';
import type { OutputThrottle } from './output-throttle.js';
import { acquireSlab, releaseSlab } from './slab-pool.js';

const log = logger('cri-log');

export type LogStream = 'stdout' | 'stderr';

/** kubelet's default max log line (containerd `max_container_log_line_size`). */
export const MAX_LOG_LINE = 16 * 1024;
/**
 * Input formatted per event-loop turn. A larger write (a guest may send 4 MiB
 * of newlines in one event) is finished in later turns, so one pod's output
 * never holds the daemon's thread for long (H2).
 */
export const TURN_INPUT_BYTES = 16 << 10;
/**
 * Formatted records allowed to wait for the file before the backlog stops
 * formatting. Formatting can outrun the disk (one newline becomes a ~40-byte
 * record), so without this a paused guest's last few MiB of input could still
 * turn into a hundred MiB of host memory.
 */
export const FORMAT_AHEAD_BYTES = 1 << 20;

const NEWLINE = 0x0a;
const CR = 0x0d;
const TAG_FULL = 0x46; // 'F'
const TAG_PARTIAL = 0x50; // 'P'

interface Slab {
  buf: Buffer;
  /** Regions handed to a file write that has not finished. */
  inFlight: number;
  /** No longer the slab being filled. */
  retired: boolean;
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
 * Cost (H2, security review 2026-12-01): O(bytes) with a small constant per
 * line. Lines are found with the native indexOf, a run of empty lines is one
 * native fill, the records of one write share a timestamp, and records go
 * into reused slabs that are written out with one writev per turn of the
 * file chain. At most TURN_INPUT_BYTES are formatted per event-loop turn;
 * every byte formatted or waiting counts against the sandbox's throttle,
 * which pauses the guest's channel.
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
  /** Bytes formatted (or waiting to be) and not yet in the file. */
  private queued = 0;
  /** Input left over from earlier turns, in order; `end` marks an endStream. */
  private readonly backlog: Array<{ stream: LogStream; data?: Buffer }> = [];
  private backlogDone: Promise<void> | undefined;
  /** Input bytes in `backlog` (counted in `queued` too). */
  private backlogBytes = 0;
  private slab: Slab | undefined;
  private slabUsed = 0;
  private slabFlushed = 0;
  private readonly ready: Array<{ slab: Slab; view: Buffer }> = [];
  private flushScheduled = false;

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

  /** Bytes formatted or waiting, not yet in the file. */
  get queuedBytes(): number {
    return this.queued;
  }

  /** Adds output from one stream; complete lines are queued for the file. */
  write(stream: LogStream, data: Uint8Array): void {
    if (this.closed || data.byteLength === 0) return;
    let buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (this.backlog.length === 0) {
      if (buf.length <= TURN_INPUT_BYTES) {
        this.format(stream, buf);
        return;
      }
      this.format(stream, buf.subarray(0, TURN_INPUT_BYTES));
      buf = buf.subarray(TURN_INPUT_BYTES);
    }
    // Copy: the caller's buffer may be reused by the stream that produced it.
    this.defer({ stream, data: Buffer.from(buf) });
  }

  /** The stream has ended: its unfinished line, if any, becomes an F record. */
  endStream(stream: LogStream): void {
    if (this.backlog.length > 0) this.defer({ stream });
    else this.finishLine(stream);
  }

  /** Closes the current file and opens `path` anew (after kubelet renamed it away). */
  reopen(): Promise<void> {
    const step = this.chain.then(async () => {
      if (this.closed && !this.file) return;
      const old = this.file;
      this.file = await openLog(this.path);
      await old?.close();
    });
    this.chain = step.catch((e) => this.fail(e));
    return step;
  }

  /** Resolves when everything written so far is in the file. */
  async flush(): Promise<void> {
    await this.backlogDone;
    await this.chain;
    if (this.failure) throw this.failure;
  }

  /** Writes unfinished lines of both streams and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.endStream('stdout');
    this.endStream('stderr');
    this.closed = true;
    await this.backlogDone;
    this.chain = this.chain.then(async () => {
      await this.file?.close();
      this.file = undefined;
    });
    await this.chain;
  }

  // ------------------------------------------------------------ input, a turn at a time

  private defer(item: { stream: LogStream; data?: Buffer }): void {
    this.backlog.push(item);
    if (item.data) {
      this.backlogBytes += item.data.length;
      this.count(item.data.length);
    }
    this.backlogDone ??= new Promise<void>((resolve) => {
      const turn = () => {
        if (this.queued - this.backlogBytes > FORMAT_AHEAD_BYTES) {
          // The disk is behind: format more once the writes queued so far are done.
          this.scheduleFlush();
          void this.chain.then(() => setImmediate(turn));
          return;
        }
        let budget = TURN_INPUT_BYTES;
        while (this.backlog.length > 0 && budget > 0) {
          const next = this.backlog[0]!;
          if (!next.data) {
            this.backlog.shift();
            this.finishLine(next.stream);
            continue;
          }
          const piece = next.data.subarray(0, budget);
          next.data = next.data.subarray(piece.length);
          if (next.data.length === 0) this.backlog.shift();
          budget -= piece.length;
          this.format(next.stream, piece);
          this.backlogBytes -= piece.length;
          this.uncount(piece.length);
        }
        if (this.backlog.length > 0) {
          setImmediate(turn);
          return;
        }
        this.backlogDone = undefined;
        resolve();
      };
      setImmediate(turn);
    });
  }

  private format(stream: LogStream, buf: Buffer): void {
    const prefix = Buffer.from(`${rfc3339Nano(this.now())} ${stream} `);
    let pos = 0;
    // The next newline at or after pos (-1: none left). Found once and reused, so a
    // chunk without newlines costs O(bytes), not O(bytes²/maxLine).
    let nl = buf.indexOf(NEWLINE);
    while (pos < buf.length) {
      const room = this.maxLine - this.pendingBytes[stream];
      if (nl !== -1 && nl < pos) nl = buf.indexOf(NEWLINE, pos);
      if (nl !== -1 && nl - pos <= room) {
        if (this.pendingBytes[stream] > 0) {
          this.take(stream, buf.subarray(pos, nl));
          this.addRecord(prefix, TAG_FULL, this.drain(stream, true));
          pos = nl + 1;
        } else if (nl === pos) {
          // A run of empty lines (`yes ''`): native fills of identical records.
          let end = pos + 1;
          while (end < buf.length && buf[end] === NEWLINE) end++;
          this.addEmptyRecords(prefix, end - pos);
          pos = end;
        } else {
          // The common case: the whole line is in this chunk; copy it straight into the slab.
          this.addRecord(prefix, TAG_FULL, buf.subarray(pos, buf[nl - 1] === CR ? nl - 1 : nl));
          pos = nl + 1;
        }
      } else if (buf.length - pos >= room) {
        // The line reaches maxLine before its end: the first maxLine bytes become a P record.
        this.take(stream, buf.subarray(pos, pos + room));
        this.addRecord(prefix, TAG_PARTIAL, this.drain(stream, false));
        pos += room;
      } else {
        this.take(stream, buf.subarray(pos));
        break;
      }
    }
    this.scheduleFlush();
  }

  private finishLine(stream: LogStream): void {
    if (this.pendingBytes[stream] === 0) return;
    this.addRecord(Buffer.from(`${rfc3339Nano(this.now())} ${stream} `), TAG_FULL, this.drain(stream, true));
    this.scheduleFlush();
  }

  private take(stream: LogStream, piece: Buffer): void {
    if (piece.length === 0) return;
    // Copy: the caller's buffer may be reused by the stream that produced it.
    this.pending[stream].push(Buffer.from(piece));
    this.pendingBytes[stream] += piece.length;
  }

  private drain(stream: LogStream, lineEnded: boolean): Buffer {
    let text = this.pending[stream].length === 1 ? this.pending[stream][0]! : Buffer.concat(this.pending[stream]);
    this.pending[stream] = [];
    this.pendingBytes[stream] = 0;
    // A CRLF line ending is one line end (bufio.ReadLine drops "\r\n" too).
    if (lineEnded && text.length > 0 && text[text.length - 1] === CR) text = text.subarray(0, text.length - 1);
    return text;
  }

  // ------------------------------------------------------------ records into slabs

  private addRecord(prefix: Buffer, tag: number, text: Buffer): void {
    const b = this.room(prefix.length + 3 + text.length);
    let at = this.slabUsed + prefix.copy(b, this.slabUsed);
    b[at++] = tag;
    b[at++] = 0x20;
    if (text.length > 0) at += text.copy(b, at);
    b[at++] = NEWLINE;
    this.count(at - this.slabUsed);
    this.slabUsed = at;
  }

  private addEmptyRecords(prefix: Buffer, count: number): void {
    const record = Buffer.concat([prefix, Buffer.from([TAG_FULL, 0x20, NEWLINE])]);
    while (count > 0) {
      const b = this.room(record.length);
      const n = Math.min(count, Math.floor((b.length - this.slabUsed) / record.length));
      const bytes = n * record.length;
      b.fill(record, this.slabUsed, this.slabUsed + bytes);
      this.slabUsed += bytes;
      this.count(bytes);
      count -= n;
    }
  }

  /** The slab to write `need` bytes into at slabUsed (a fresh one when the current is too full). */
  private room(need: number): Buffer {
    if (this.slab && this.slab.buf.length - this.slabUsed >= need) return this.slab.buf;
    this.retireSlab();
    this.slab = { buf: acquireSlab(need), inFlight: 0, retired: false };
    this.slabUsed = 0;
    this.slabFlushed = 0;
    return this.slab.buf;
  }

  /** Moves the current slab's unwritten records to the ready list. */
  private cutSlab(): void {
    const s = this.slab;
    if (!s || this.slabUsed === this.slabFlushed) return;
    s.inFlight++;
    this.ready.push({ slab: s, view: s.buf.subarray(this.slabFlushed, this.slabUsed) });
    this.slabFlushed = this.slabUsed;
  }

  private retireSlab(): void {
    const s = this.slab;
    if (!s) return;
    this.cutSlab();
    s.retired = true;
    this.slab = undefined;
    if (s.inFlight === 0) releaseSlab(s.buf);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    this.chain = this.chain
      .then(async () => {
        this.flushScheduled = false;
        this.cutSlab();
        const items = this.ready.splice(0);
        if (items.length === 0) return;
        const bytes = items.reduce((n, i) => n + i.view.length, 0);
        try {
          if (this.file) await this.file.writev(items.map((i) => i.view));
        } finally {
          for (const { slab } of items) {
            slab.inFlight--;
            if (slab.retired && slab.inFlight === 0) releaseSlab(slab.buf);
          }
          this.uncount(bytes);
        }
      })
      .catch((e) => this.fail(e));
  }

  private count(bytes: number): void {
    this.queued += bytes;
    this.throttle?.add(bytes);
  }

  private uncount(bytes: number): void {
    this.queued -= bytes;
    this.throttle?.done(bytes);
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
