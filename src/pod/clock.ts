/**
 * CRI timestamps are int64 nanoseconds since the epoch. They do not fit in a JS
 * number exactly, so records keep them as decimal strings and the CRI layer
 * hands them to protobuf as strings (protobufjs accepts strings for int64).
 */
export type Nanos = string;

let last = 0n;

/** Wall-clock now in nanoseconds (microsecond resolution), strictly increasing within this process. */
export function nowNanosBig(): bigint {
  let n = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
  if (n <= last) n = last + 1n;
  last = n;
  return n;
}

export function nowNanos(): Nanos {
  return nowNanosBig().toString();
}

/** RFC 3339 in UTC with up to nine fraction digits, trailing zeros trimmed (Go's time.RFC3339Nano). */
export function rfc3339Nano(nanos: bigint): string {
  const ms = nanos / 1_000_000n;
  const iso = new Date(Number(ms)).toISOString(); // 2026-11-25T02:31:30.123Z
  const frac = (nanos % 1_000_000_000n).toString().padStart(9, '0').replace(/0+$/, '');
  return iso.slice(0, 19) + (frac === '' ? '' : '.' + frac) + 'Z';
}
