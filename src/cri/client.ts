import { resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import { CRI_MAX_MESSAGE_BYTES, criGrpc, type ImageServiceClient, type RuntimeServiceClient } from './proto.js';

/** CRI clients for the CLI, hack/demo-pod.ts, the tests, and the pass-through runtime's client (passthrough/remote-runtime.ts). */

export interface CriClient {
  runtime: RuntimeServiceClient;
  image: ImageServiceClient;
  /** Closes the channel both clients share. */
  close(): void;
}

/**
 * Real grpc-js clients for both CRI services over one channel to a unix
 * socket, as kubelet and crictl connect.
 */
export function criClient(socketPath: string, options: grpc.ChannelOptions = {}): CriClient {
  const target = `unix:${resolve(socketPath)}`;
  const channelOptions: grpc.ChannelOptions = {
    'grpc.max_receive_message_length': CRI_MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': CRI_MAX_MESSAGE_BYTES,
    ...options,
  };
  const credentials = grpc.credentials.createInsecure();
  const runtime = new criGrpc.runtime.v1.RuntimeService(target, credentials, channelOptions);
  const image = new criGrpc.runtime.v1.ImageService(target, credentials, {
    ...channelOptions,
    channelOverride: runtime.getChannel(),
  });
  return {
    runtime,
    image,
    close: () => runtime.close(),
  };
}

// A conditional type on an overloaded method matches its last overload,
// which for grpc-js clients is (request, callback).
type RequestOf<F> = F extends (req: infer R, cb: infer _Callback) => unknown ? R : never;
type ResponseOf<F> = F extends (req: never, cb: infer C) => unknown
  ? C extends (err: ServiceError | null, res?: infer R) => void
    ? R
    : never
  : never;

/**
 * Calls one unary method of a grpc-js client as a promise: `await unary(client.runtime, 'Version', {})`.
 * `options` (e.g. a deadline) are grpc-js call options.
 */
export function unary<C, K extends keyof C>(client: C, method: K, req: RequestOf<C[K]>, options: grpc.CallOptions = {}): Promise<ResponseOf<C[K]>> {
  return new Promise((resolve, reject) => {
    const fn = client[method] as unknown as (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: ServiceError | null, res?: unknown) => void) => unknown;
    fn.call(client, req, new grpc.Metadata(), options, (err, res) => (err ? reject(err) : resolve(res as ResponseOf<C[K]>)));
  });
}
