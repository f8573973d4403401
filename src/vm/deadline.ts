import { deadlineExceeded } from '../errors.js';

/** `p`, or DEADLINE_EXCEEDED with `message` once `ms` have passed (the work itself is not cancelled). */
export async function withDeadline<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(deadlineExceeded(message)), Math.max(0, ms));
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
