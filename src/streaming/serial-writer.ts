import { messageOf } from '../errors.js';

/** Bytes waiting for the guest past which the client is no longer read. */
const BACKLOG_HIGH_WATER = 1 << 20;
/** One write to the guest carries at most this much (the agent channel's messages stay well under 4 MiB). */
const CHUNK = 256 * 1024;

/**
 * Client bytes on their way into the guest (stdin, a forwarded connection):
 * written one call at a time, in order, small pieces coalesced; while the
 * guest lags by more than the high-water mark the owner stops reading the
 * client (`onBacklog(true)`). After `end`, `finish` runs once everything was
 * written. A failed write drops the rest (like a closed pipe) and reports it.
 */
export class SerialWriter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private writing = false;
  private ended = false;
  private broken = false;
  private finished = false;

  constructor(
    private readonly write: (data: Buffer) => Promise<void>,
    private readonly finish: () => Promise<void>,
    private readonly onBacklog: (full: boolean) => void,
    private readonly onError: (message: string) => void,
  ) {}

  push(data: Buffer): void {
    if (this.broken || this.ended) return;
    this.pending.push(data);
    this.pendingBytes += data.length;
    if (this.pendingBytes >= BACKLOG_HIGH_WATER) this.onBacklog(true);
    void this.pump();
  }

  end(): void {
    this.ended = true;
    void this.pump();
  }

  /** Stops writing (the session is over). */
  stop(): void {
    this.broken = true;
    this.pending = [];
    this.pendingBytes = 0;
  }

  private async pump(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    try {
      while (this.pending.length > 0 && !this.broken) {
        const all = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
        const piece = all.subarray(0, CHUNK);
        const rest = all.subarray(piece.length);
        this.pending = rest.length ? [rest] : [];
        const before = this.pendingBytes;
        this.pendingBytes = rest.length;
        if (before >= BACKLOG_HIGH_WATER && this.pendingBytes < BACKLOG_HIGH_WATER) this.onBacklog(false);
        try {
          await this.write(piece);
        } catch (e) {
          this.stop();
          this.onBacklog(false);
          this.onError(messageOf(e));
        }
      }
      if (this.ended && !this.broken && !this.finished && this.pending.length === 0) {
        this.finished = true;
        await this.finish().catch((e) => this.onError(messageOf(e)));
      }
    } finally {
      this.writing = false;
    }
    // Something may have arrived while the last write was in flight.
    if (!this.broken && (this.pending.length > 0 || (this.ended && !this.finished))) void this.pump();
  }
}
