import { status as GrpcCode, type ServiceError, Metadata } from '@grpc/grpc-js';
import { PodvisorError, type ErrorCode } from '../errors.js';

/** The one mapping from podvisor's error codes to gRPC status codes. */
const CODES: Record<ErrorCode, GrpcCode> = {
  INVALID_ARGUMENT: GrpcCode.INVALID_ARGUMENT,
  NOT_FOUND: GrpcCode.NOT_FOUND,
  ALREADY_EXISTS: GrpcCode.ALREADY_EXISTS,
  FAILED_PRECONDITION: GrpcCode.FAILED_PRECONDITION,
  UNIMPLEMENTED: GrpcCode.UNIMPLEMENTED,
  RESOURCE_EXHAUSTED: GrpcCode.RESOURCE_EXHAUSTED,
  DEADLINE_EXCEEDED: GrpcCode.DEADLINE_EXCEEDED,
  UNAVAILABLE: GrpcCode.UNAVAILABLE,
  PERMISSION_DENIED: GrpcCode.PERMISSION_DENIED,
  UNAUTHENTICATED: GrpcCode.UNAUTHENTICATED,
  ABORTED: GrpcCode.ABORTED,
  INTERNAL: GrpcCode.INTERNAL,
};

export function grpcCodeOf(code: ErrorCode): GrpcCode {
  return CODES[code];
}

/**
 * Turns anything a handler threw into a gRPC error. Errors podvisor did not
 * type are bugs or unexpected system failures: they become INTERNAL and keep
 * their message so the operator still sees what happened.
 */
export function toServiceError(e: unknown): Partial<ServiceError> {
  if (e instanceof PodvisorError) {
    return { code: grpcCodeOf(e.code), details: e.message, message: e.message, metadata: new Metadata() };
  }
  const message = e instanceof Error ? e.message : String(e);
  return { code: GrpcCode.INTERNAL, details: `internal error: ${message}`, message, metadata: new Metadata() };
}
