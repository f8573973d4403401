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
/** How often a held-back session looks whether its client has read down to the low-water mark. */
const RESUME_CHECK_MS = 5;

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
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private set(paused: boolean): void {
    this.paused = paused;
    if (paused) {
      this.timer ??= setInterval(() => this.check(), RESUME_CHECK_MS);
      this.timer.unref();
    } else {
      clearInterval(this.timer);
      this.timer = undefined;
    }
    void this.pause(paused).catch((e) => log.debug({ session: this.opts.label, paused, err: messageOf(e) }, 'output flow control'));
  }
}
