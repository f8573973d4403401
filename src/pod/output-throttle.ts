/**
 * Backpressure for one sandbox's container output (H2). Every byte its log
 * writers have formatted but not yet written is counted here; above the high
 * mark the sandbox's agent channel is paused, so the guest (whose agent in turn
 * pauses the container's pipes) waits for the host's disk instead of the host
 * buffering without bound. Below the low mark it is resumed. Each sandbox has
 * its own throttle, so one pod printing as fast as it can holds at most
 * `high` bytes of host memory and never stops another pod's output.
 */
export class OutputThrottle {
  private queued = 0;
  private paused = false;
  private target: { pause(): void; resume(): void } | undefined;

  constructor(readonly high = 4 << 20, readonly low = 1 << 20) {}

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
    if (!this.paused && this.queued > this.high) {
      this.paused = true;
      this.target?.pause();
    }
  }

  done(bytes: number): void {
    this.queued -= bytes;
    if (this.paused && this.queued <= this.low) {
      this.paused = false;
      this.target?.resume();
    }
  }
}
