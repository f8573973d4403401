import { status as GrpcCode, type ServiceError, Metadata } from '@grpc/grpc-js';
import { PodvisorError, STATUS_NUMBERS, type ErrorCode } from '../errors.js';

/**
 * The one mapping from podvisor's error codes to gRPC status codes. Each code
 * is named after its gRPC status, and errors.ts holds the numbers (the agent
 * channel carries them too); test/unit/cri-mapping.test.ts checks them
 * against grpc-js's enum, name for name.
 */
export function grpcCodeOf(code: ErrorCode): GrpcCode {
  return STATUS_NUMBERS[code] as GrpcCode;
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
