import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { nowNanosBig, rfc3339Nano } from './clock.js';
import { logger } from '../log.js';

const log = logger('cri-log');

export type LogStream = 'stdout' | 'stderr';

/** kubelet's default max log line (containerd `max_container_log_line_size`). */
export const MAX_LOG_LINE = 16 * 1024;

const NEWLINE = 0x0a;
const CR = 0x0d;

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

  private constructor(readonly path: string, private readonly maxLine: number, private readonly now: () => bigint) {}

  /** Opens (creating, appending) the log file; the directory is created if kubelet has not yet. */
  static async open(path: string, opts: { maxLine?: number; now?: () => bigint } = {}): Promise<CriLogWriter> {
    const w = new CriLogWriter(path, opts.maxLine ?? MAX_LOG_LINE, opts.now ?? nowNanosBig);
    w.file = await openLog(path);
    return w;
  }

  /** Adds output from one stream; complete lines are queued for the file at once. */
  write(stream: LogStream, data: Uint8Array): void {
    if (this.closed) return;
    let buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const records: Buffer[] = [];
    while (buf.length > 0) {
      const nl = buf.indexOf(NEWLINE);
      const room = this.maxLine - this.pendingBytes[stream];
      if (nl !== -1 && nl <= room) {
        this.take(stream, buf.subarray(0, nl));
        records.push(this.record(stream, 'F', this.drain(stream, true)));
        buf = buf.subarray(nl + 1);
      } else if (buf.length >= room) {
        // The line reaches maxLine before its end: the first maxLine bytes become a P record.
        this.take(stream, buf.subarray(0, room));
        records.push(this.record(stream, 'P', this.drain(stream, false)));
        buf = buf.subarray(room);
      } else {
        this.take(stream, buf);
        break;
      }
    }
    if (records.length > 0) this.enqueue(Buffer.concat(records));
  }

  /** The stream has ended: its unfinished line, if any, becomes an F record. */
  endStream(stream: LogStream): void {
    if (this.pendingBytes[stream] > 0) this.enqueue(this.record(stream, 'F', this.drain(stream, true)));
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

  private record(stream: LogStream, tag: 'P' | 'F', text: Buffer): Buffer {
    const head = Buffer.from(`${rfc3339Nano(this.now())} ${stream} ${tag} `);
    return Buffer.concat([head, text, Buffer.from('\n')]);
  }

  private enqueue(bytes: Buffer): void {
    this.chain = this.chain
      .then(async () => {
        if (this.file) await this.file.write(bytes);
      })
      .catch((e) => this.fail(e));
  }

  private fail(e: unknown): void {
    // A full disk or a vanished directory must not crash the daemon; the error is kept for flush().
    this.failure = e instanceof Error ? e : new Error(String(e));
    log.warn({ path: this.path, err: this.failure.message }, 'writing container log failed');
  }
}

async function openLog(path: string): Promise<FileHandle> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  return open(path, 'a', 0o640);
}
