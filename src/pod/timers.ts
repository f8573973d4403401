/**
 * The longest delay a Node timer honours: anything above 2^31-1 ms is taken
 * as 1 ms (with a TimeoutOverflowWarning), so a huge CRI timeout would fire
 * at once (L4: a StopContainer grace period of 2 147 484 s meant an immediate
 * SIGKILL). About 24.8 days: for a timeout, the same as forever.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Seconds from a CRI request as a timer delay, clamped to what a timer can wait. */
export function timerMs(seconds: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(0, seconds * 1000));
}
