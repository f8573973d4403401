/**
 * Calls `onIdle` once nothing has happened for `idleMs`. `touch()` runs for
 * every chunk of a busy stream, so it only notes the time; the one timer
 * re-arms itself for the remainder when it fires early.
 */
export class IdleTimer {
  private last = Date.now();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly idleMs: number, private readonly onIdle: () => void) {
    this.arm(idleMs);
  }

  touch(): void {
    this.last = Date.now();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(ms: number): void {
    this.timer = setTimeout(() => {
      const left = this.last + this.idleMs - Date.now();
      if (left > 0) this.arm(left);
      else {
        this.timer = undefined;
        this.onIdle();
      }
    }, ms);
    this.timer.unref();
  }
}
