/**
 * Backpressure for one sandbox's container output (H2, H3). Two limits, both
 * enforced by pausing the sandbox's agent channel (the agent then pauses the
 * containers' pipes, so the guest waits instead of the host buffering):
 *  - memory: every byte its log writers have formatted but not yet written
 *    counts; above `high` the channel pauses, at `low` it resumes;
 *  - rate: CRI log bytes per second, a token bucket of `ratePerSecond` with a
 *    burst of the same size. A container printing empty lines turns each input
 *    byte into a ~40-byte record; without a rate the disk traffic and the
 *    kernel's share of it (which competes with the daemon's thread for the
 *    node's cores) grow with whatever the guest can produce.
 * Each sandbox has its own throttle, so one pod printing as fast as it can
 * holds at most `high` bytes of host memory, writes at most `ratePerSecond`,
 * and never pauses another pod's output.
 */
export class OutputThrottle {
  private queued = 0;
  private paused = false;
  private tokens: number;
  private lastRefill = Date.now();
  private refillTimer: NodeJS.Timeout | undefined;
  private target: { pause(): void; resume(): void } | undefined;

  constructor(readonly high = 4 << 20, readonly low = 1 << 20, readonly ratePerSecond = DEFAULT_LOG_RATE) {
    this.tokens = ratePerSecond;
  }

  /** The channel to pause; set when the sandbox's agent is attached (writers may open before). */
  bind(target: { pause(): void; resume(): void }): void {
    this.target = target;
    if (this.paused) target.pause();
  }

  get queuedBytes(): number {
    return this.queued;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  add(bytes: number): void {
    this.queued += bytes;
    this.refill();
    this.tokens -= bytes;
    this.update();
  }

  done(bytes: number): void {
    this.queued -= bytes;
    this.update();
  }

  private refill(): void {
    const now = Date.now();
    this.tokens = Math.min(this.ratePerSecond, this.tokens + ((now - this.lastRefill) / 1000) * this.ratePerSecond);
    this.lastRefill = now;
  }

  private update(): void {
    const overRate = this.tokens < 0;
    if (!this.paused && (this.queued > this.high || overRate)) {
      this.paused = true;
      this.target?.pause();
    } else if (this.paused && this.queued <= this.low && !overRate) {
      this.paused = false;
      this.target?.resume();
    }
    if (this.paused && overRate && !this.refillTimer) {
      // Wake when the bucket is back above zero.
      this.refillTimer = setTimeout(() => {
        this.refillTimer = undefined;
        this.refill();
        this.update();
      }, Math.ceil((-this.tokens / this.ratePerSecond) * 1000) + 1);
      this.refillTimer.unref();
    }
  }
}

/** CRI log bytes per second one sandbox may write (records, after framing). */
export const DEFAULT_LOG_RATE = 8 << 20;
