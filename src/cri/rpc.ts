import type * as grpc from '@grpc/grpc-js';
import type { CriServices } from './services.js';
import type { RuntimeServiceHandlers, ImageServiceHandlers } from './proto.js';

/**
 * The shape of one handler file's export: a plain async function from the
 * decoded request to the response, derived from the generated grpc-js types
 * so a handler cannot answer with the wrong message.
 */
export type CriUnary<Req, Res> = (svc: CriServices, req: Req, call?: CallContext) => Promise<Res>;

/** What a unary handler knows about its call: `signal` aborts (with the error to answer) when the caller's deadline passes or it cancels. */
export interface CallContext {
  signal: AbortSignal;
}
export type CriServerStream<Req, Res> = (svc: CriServices, req: Req, out: grpc.ServerWritableStream<Req, Res>) => Promise<void>;

type HandlerOf<H> =
  H extends grpc.handleUnaryCall<infer Req, infer Res>
    ? CriUnary<Req, Res>
    : H extends grpc.handleServerStreamingCall<infer Req, infer Res>
      ? CriServerStream<Req, Res>
      : never;

type RuntimeRpcName = Extract<keyof RuntimeServiceHandlers, string>;
type ImageRpcName = Extract<keyof ImageServiceHandlers, string>;

/** Handler type of a RuntimeService RPC, e.g. `RuntimeRpc<'Version'>`. */
export type RuntimeRpc<K extends RuntimeRpcName> = HandlerOf<RuntimeServiceHandlers[K]>;
/** Handler type of an ImageService RPC, e.g. `ImageRpc<'PullImage'>`. */
export type ImageRpc<K extends ImageRpcName> = HandlerOf<ImageServiceHandlers[K]>;

export type RuntimeHandlerTable = { [K in RuntimeRpcName]?: RuntimeRpc<K> };
export type ImageHandlerTable = { [K in ImageRpcName]?: ImageRpc<K> };
