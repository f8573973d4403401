import { messageOf } from '../errors.js';
import { logger } from '../log.js';

const log = logger('streaming');

/** Past this many bytes queued towards the client, the guest is asked to hold its output back. */
export const OUTPUT_HIGH_WATER = 2 << 20;
/**
 * Below this many the guest is told to go on. Resuming before the queue is
 * empty hides the round trip to the guest: the client still has this much to
 * read while the resume travels and the first new bytes come back.
 */
export const OUTPUT_LOW_WATER = 512 << 10;
/**
 * How often a held-back session looks whether its client has read down to the
 * low-water mark: often while the client is reading, backing off to the
 * slowest while it reads nothing (a stalled client costs next to no wake-ups).
 */
const RESUME_CHECK_MS = 5;
const RESUME_CHECK_MAX_MS = 200;

/**
 * Output backpressure from one client to one guest source (an exec's pipes,
 * a forwarded socket): `check()` after each write and on the transport's
 * drain pauses the source past the high-water mark and resumes it below the
 * low-water mark. While paused a short timer watches the queue, since the
 * transport only reports an empty queue. What arrives while a pause is on its
 * way is still queued, so the queue can pass the high-water mark by what the
 * guest had in flight; `hardLimit` (when given) ends the session instead.
 */
export class OutputFlow {
  private paused = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private watchMs = RESUME_CHECK_MS;
  private lastQueued = 0;

  constructor(
    private readonly queuedBytes: () => number,
    private readonly pause: (paused: boolean) => Promise<unknown>,
    private readonly opts: { label: string; hardLimit?: number; onTooSlow?: (queued: number) => void },
  ) {}

  check(): void {
    if (this.stopped) return;
    const queued = this.queuedBytes();
    if (this.opts.hardLimit !== undefined && queued > this.opts.hardLimit) {
      this.stop();
      this.opts.onTooSlow?.(queued);
      return;
    }
    if (!this.paused && queued > OUTPUT_HIGH_WATER) this.set(true);
    else if (this.paused && queued < OUTPUT_LOW_WATER) this.set(false);
  }

  /** The session is over: no more pause or resume requests. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private watch(): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const queued = this.queuedBytes();
      this.watchMs = queued < this.lastQueued ? RESUME_CHECK_MS : Math.min(this.watchMs * 2, RESUME_CHECK_MAX_MS);
      this.lastQueued = queued;
      this.check();
      if (this.paused && !this.stopped && !this.timer) this.watch();
    }, this.watchMs);
    this.timer.unref();
  }

  private set(paused: boolean): void {
    this.paused = paused;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (paused) {
      this.watchMs = RESUME_CHECK_MS;
      this.lastQueued = this.queuedBytes();
      this.watch();
    }
    void this.pause(paused).catch((e) => log.debug({ session: this.opts.label, paused, err: messageOf(e) }, 'output flow control'));
  }
}
