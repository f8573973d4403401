import { EventEmitter } from 'node:events';

/** Bytes an input may hold before its consumer starts, past which `onFull` is told to stop reading. */
const HOLD_LIMIT = 1 << 20;

/**
 * A client input (stdin, resize, a forwarded connection's data) whose bytes can
 * arrive before the session is ready for them: they are held, in order, and
 * replayed when `start` is called. `onFull` lets the owner stop reading from
 * the client meanwhile.
 */
export class HeldInput extends EventEmitter<{ data: [Buffer]; end: [] }> {
  private held: Buffer[] | undefined = [];
  private heldBytes = 0;
  private ended = false;

  constructor(private readonly onFull: (full: boolean) => void = () => undefined) {
    super();
  }

  push(data: Buffer): void {
    if (this.ended) return;
    if (this.held) {
      this.held.push(data);
      this.heldBytes += data.length;
      if (this.heldBytes > HOLD_LIMIT) this.onFull(true);
    } else {
      this.emit('data', data);
    }
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.held) this.emit('end');
  }

  start(): void {
    const held = this.held;
    if (!held) return;
    this.held = undefined;
    if (this.heldBytes > HOLD_LIMIT) this.onFull(false);
    for (const chunk of held) this.emit('data', chunk);
    if (this.ended) this.emit('end');
  }
}
