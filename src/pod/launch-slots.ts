import { cancelled, PodvisorError } from '../errors.js';

/**
 * Bounded parallelism for VM boots. A cold boot under emulation is seconds of pure CPU; many
 * at once on a small host all finish late (and can miss their boot deadline together), so
 * only `limit` boots run at a time and the others wait their turn, first come first served.
 * A waiter whose caller gives up (deadline, cancellation) leaves the queue at once and holds
 * nothing, so there is nothing to undo.
 */
export class LaunchSlots {
  private running = 0;
  private readonly queue: Array<{ grant: () => void }> = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`launch slots: limit must be a positive integer, got ${limit}`);
  }

  /** Boots holding a slot now. */
  get active(): number {
    return this.running;
  }

  /** Callers waiting for a slot. */
  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Waits for a slot; resolves with its release function (calling it twice is harmless).
   * Rejects with DEADLINE_EXCEEDED or CANCELLED when `signal` aborts first.
   */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.running < this.limit) {
      this.running++;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve, reject) => {
      const entry = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          this.running++;
          resolve(this.releaser());
        },
      };
      const onAbort = () => {
        const i = this.queue.indexOf(entry);
        if (i >= 0) this.queue.splice(i, 1);
        reject(abortError(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(entry);
    });
  }

  /** Runs `fn` holding a slot. */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const release = await this.acquire(signal);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.running--;
      this.queue.shift()?.grant();
    };
  }
}

/**
 * The error for a caller that gave up. Whoever aborts the signal passes the error to answer
 * with (the CRI layer: DEADLINE_EXCEEDED or CANCELLED); any other reason counts as cancelled.
 */
export function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof PodvisorError ? signal.reason : cancelled('the call was cancelled while the sandbox was starting');
}
