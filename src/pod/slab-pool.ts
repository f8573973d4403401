/**
 * Reusable output buffers for the CRI log writers. Fresh memory costs a page
 * fault per 4 KiB on first touch, and on a busy host that (not the copying)
 * dominated formatting a flood of short lines: an empty line becomes a
 * ~40-byte record, so 64 KiB of `yes ''` is 2.6 MB of records. Slabs that
 * were written out are kept (up to a bound) and filled again.
 */
export const SLAB_BYTES = 256 << 10;
const MAX_FREE_SLABS = 32;

const free: Buffer[] = [];

export function acquireSlab(minBytes: number): Buffer {
  if (minBytes > SLAB_BYTES) return Buffer.allocUnsafe(minBytes); // one huge record: not pooled
  return free.pop() ?? Buffer.allocUnsafe(SLAB_BYTES);
}

export function releaseSlab(slab: Buffer): void {
  if (slab.length === SLAB_BYTES && free.length < MAX_FREE_SLABS) free.push(slab);
}
