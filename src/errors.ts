/**
 * The one error type podvisor's domain modules throw. Each carries a stable
 * `code`; `src/cri/grpc-status.ts` is the only place that turns a code into a
 * gRPC status, so domain code never imports grpc-js.
 */
export type ErrorCode = keyof typeof STATUS_NUMBERS;

/**
 * Each code is a gRPC status code; this is its number, which the CRI
 * (src/cri/grpc-status.ts) and the agent channel (src/ttrpc/status.ts) both
 * carry on the wire. One table, so the two cannot drift apart.
 */
export const STATUS_NUMBERS = {
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export class PodvisorError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PodvisorError';
    this.code = code;
  }
}

export const invalidArgument = (msg: string, cause?: unknown) => new PodvisorError('INVALID_ARGUMENT', msg, { cause });
export const notFound = (msg: string, cause?: unknown) => new PodvisorError('NOT_FOUND', msg, { cause });
export const alreadyExists = (msg: string, cause?: unknown) => new PodvisorError('ALREADY_EXISTS', msg, { cause });
export const failedPrecondition = (msg: string, cause?: unknown) => new PodvisorError('FAILED_PRECONDITION', msg, { cause });
export const unimplemented = (msg: string) => new PodvisorError('UNIMPLEMENTED', msg);
export const resourceExhausted = (msg: string, cause?: unknown) => new PodvisorError('RESOURCE_EXHAUSTED', msg, { cause });
export const deadlineExceeded = (msg: string, cause?: unknown) => new PodvisorError('DEADLINE_EXCEEDED', msg, { cause });
export const unavailable = (msg: string, cause?: unknown) => new PodvisorError('UNAVAILABLE', msg, { cause });
export const permissionDenied = (msg: string, cause?: unknown) => new PodvisorError('PERMISSION_DENIED', msg, { cause });
export const unauthenticated = (msg: string, cause?: unknown) => new PodvisorError('UNAUTHENTICATED', msg, { cause });
export const cancelled = (msg: string, cause?: unknown) => new PodvisorError('CANCELLED', msg, { cause });
export const internal = (msg: string, cause?: unknown) => new PodvisorError('INTERNAL', msg, { cause });

export function isPodvisorError(e: unknown, code?: ErrorCode): e is PodvisorError {
  return e instanceof PodvisorError && (code === undefined || e.code === code);
}

/** A message for any thrown value, for logs and wrapping. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
