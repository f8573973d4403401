import { PodvisorError, STATUS_NUMBERS, type ErrorCode } from '../errors.js';

/**
 * ttRPC statuses use gRPC's numeric codes. A PodvisorError crosses the channel
 * as its code and message and comes out the other side as the same error.
 */
const CODE_NUMBERS: Record<ErrorCode, number> = STATUS_NUMBERS;

const CODE_NAMES = new Map<number, ErrorCode>(Object.entries(CODE_NUMBERS).map(([name, n]) => [n, name as ErrorCode]));

export function statusOf(err: unknown): { code: number; message: string } {
  if (err instanceof PodvisorError) return { code: CODE_NUMBERS[err.code], message: err.message };
  return { code: CODE_NUMBERS.INTERNAL, message: err instanceof Error ? err.message : String(err) };
}

/**
 * The most of a peer's status message that reaches an error (and from there
 * CRI errors, kubelet events and the daemon log): a guest chooses it, and a
 * frame may carry 4 MiB of it.
 */
export const MAX_PEER_MESSAGE = 4096;

/** A peer-chosen string cut to MAX_PEER_MESSAGE characters, saying how much was cut. */
export function capMessage(text: string, max = MAX_PEER_MESSAGE): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters cut)`;
}

export function errorOf(status: { code: number; message: string }, context: string): PodvisorError {
  const code = CODE_NAMES.get(status.code) ?? 'INTERNAL';
  return new PodvisorError(code, `${context}: ${capMessage(status.message) || `status ${status.code}`}`);
}
