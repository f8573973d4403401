import * as grpc from '@grpc/grpc-js';
import { PodvisorError, STATUS_NUMBERS, type ErrorCode } from '../../errors.js';
import { capMessage } from '../../ttrpc/status.js';
import { unary } from '../client.js';
import { CRI_MAX_MESSAGE_BYTES, criGrpc, type ImageServiceClient, type RuntimeServiceClient } from '../proto.js';

/**
 * The co-installed CRI runtime (containerd) that pass-through pods run in,
 * reached over its own CRI socket with the same generated runtime.v1 protos
 * podvisor serves. Every call has a deadline, and every error it returns
 * keeps its gRPC code and says it came from the pass-through runtime, so
 * kubelet and the operator can tell "containerd said no" from "podvisor said no".
 */

/** How long a forwarded call may take when the RPC has no bound of its own (kubelet's runtime-request-timeout). */
export const DEFAULT_CALL_TIMEOUT_MS = 2 * 60_000;
/** Image pulls: kubelet sets no deadline; a stalled registry must still not hold the call forever. */
export const PULL_TIMEOUT_MS = 30 * 60_000;

const CODE_NAMES = new Map<number, ErrorCode>(Object.entries(STATUS_NUMBERS).map(([name, n]) => [n, name as ErrorCode]));

type Client = RuntimeServiceClient | ImageServiceClient;

export class RemoteRuntime {
  readonly runtime: RuntimeServiceClient;
  readonly image: ImageServiceClient;

  constructor(readonly endpoint: string) {
    const options: grpc.ChannelOptions = {
      'grpc.max_receive_message_length': CRI_MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': CRI_MAX_MESSAGE_BYTES,
      // containerd restarting: reconnect quickly instead of backing off for minutes.
      'grpc.max_reconnect_backoff_ms': 2000,
    };
    const target = endpoint.replace(/^unix:\/\//, 'unix:');
    const credentials = grpc.credentials.createInsecure();
    this.runtime = new criGrpc.runtime.v1.RuntimeService(target, credentials, options);
    this.image = new criGrpc.runtime.v1.ImageService(target, credentials, { ...options, channelOverride: this.runtime.getChannel() });
  }

  /**
   * One unary RuntimeService call; `timeoutMs` bounds it. The request is the
   * decoded request podvisor received (proto field names), re-encoded as is.
   */
  call<K extends keyof RuntimeServiceClient>(rpc: K, req: Parameters<typeof unary<RuntimeServiceClient, K>>[2], timeoutMs = DEFAULT_CALL_TIMEOUT_MS) {
    return this.send(this.runtime, rpc, req, timeoutMs);
  }

  /** One unary ImageService call. */
  callImage<K extends keyof ImageServiceClient>(rpc: K, req: Parameters<typeof unary<ImageServiceClient, K>>[2], timeoutMs = DEFAULT_CALL_TIMEOUT_MS) {
    return this.send(this.image, rpc, req, timeoutMs);
  }

  private async send<C extends Client, K extends keyof C>(client: C, rpc: K, req: Parameters<typeof unary<C, K>>[2], timeoutMs: number) {
    try {
      return await unary(client, rpc, req, { deadline: Date.now() + timeoutMs });
    } catch (e) {
      throw this.errorFrom(e, String(rpc));
    }
  }

  /** A gRPC error from the remote runtime as a PodvisorError with the same code, naming where it came from. */
  errorFrom(e: unknown, rpc: string): PodvisorError {
    const err = e as Partial<grpc.ServiceError>;
    const code = (typeof err.code === 'number' ? CODE_NAMES.get(err.code) : undefined) ?? 'UNKNOWN';
    const details = capMessage(err.details ?? (e instanceof Error ? e.message : String(e)));
    const what = code === 'UNAVAILABLE'
      ? `the pass-through runtime at ${this.endpoint} is unavailable (${rpc}): ${details}`
      : `pass-through runtime (${this.endpoint}) ${rpc}: ${details}`;
    return new PodvisorError(code, what, { cause: e });
  }

  close(): void {
    this.runtime.close();
  }
}
