import type { ServiceError } from '@grpc/grpc-js';

// A conditional type on an overloaded method matches its last overload,
// which for grpc-js clients is (request, callback).
type RequestOf<F> = F extends (req: infer R, cb: infer _Callback) => unknown ? R : never;
type ResponseOf<F> = F extends (req: never, cb: infer C) => unknown
  ? C extends (err: ServiceError | null, res?: infer R) => void
    ? R
    : never
  : never;

/** Calls one unary method of a grpc-js client as a promise: `await unary(client.runtime, 'Version', {})`. */
export function unary<C, K extends keyof C>(client: C, method: K, req: RequestOf<C[K]>): Promise<ResponseOf<C[K]>> {
  return new Promise((resolve, reject) => {
    const fn = client[method] as unknown as (req: unknown, cb: (err: ServiceError | null, res?: unknown) => void) => unknown;
    fn.call(client, req, (err, res) => (err ? reject(err) : resolve(res as ResponseOf<C[K]>)));
  });
}
