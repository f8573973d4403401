import { randomBytes } from 'node:crypto';
import { resourceExhausted } from '../errors.js';

/** How long a URL returned by Exec/Attach/PortForward stays valid (as kubelet's streaming server). */
export const TOKEN_TTL_MS = 60_000;
/** Outstanding (unused, unexpired) tokens at most; more requests are refused until some are used or expire. */
export const MAX_TOKENS = 1000;

/**
 * One-time tokens naming a prepared streaming request. Random (128 bits),
 * single use, expiring, and bounded in number so callers cannot fill memory.
 */
export class TokenStore<T> {
  private readonly entries = new Map<string, { value: T; expiresAt: number }>();

  constructor(private readonly ttlMs = TOKEN_TTL_MS, private readonly max = MAX_TOKENS, private readonly now: () => number = Date.now) {}

  issue(value: T): string {
    this.purge();
    if (this.entries.size >= this.max) {
      throw resourceExhausted(`${this.max} streaming requests are waiting to be used; try again when some have been used or expired (${this.ttlMs / 1000} s)`);
    }
    const token = randomBytes(16).toString('base64url');
    this.entries.set(token, { value, expiresAt: this.now() + this.ttlMs });
    return token;
  }

  /** The request behind a token, once: a second call, or one after expiry, gets undefined. */
  take(token: string): T | undefined {
    const entry = this.entries.get(token);
    if (!entry) return undefined;
    this.entries.delete(token);
    return entry.expiresAt > this.now() ? entry.value : undefined;
  }

  get size(): number {
    return this.entries.size;
  }

  private purge(): void {
    const now = this.now();
    for (const [token, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(token);
  }
}
