import { invalidArgument } from '../errors.js';

/** An id field the request must carry; an empty one is the caller's mistake, not NotFound. */
export function requireId(value: string, field: string): string {
  if (!value) throw invalidArgument(`${field} is empty`);
  return value;
}
