import { chmodSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { logger } from '../log.js';
import { cancelled, deadlineExceeded, invalidArgument, messageOf, unimplemented } from '../errors.js';
import { toServiceError } from './grpc-status.js';
import { criErrorsTotal } from '../metrics/metrics.js';
import { RuntimeService, ImageService, CRI_MAX_MESSAGE_BYTES } from './proto.js';
import type { CriServices } from './services.js';
import type { ImageHandlerTable, RuntimeHandlerTable } from './rpc.js';
import { runtimeHandlers, imageHandlers } from './handlers.js';

const log = logger('cri');

/** Marks a request whose bytes did not decode, so the handler wrapper can answer INVALID_ARGUMENT. */
const MALFORMED = Symbol('malformed request');
type Malformed = { [MALFORMED]: string };

/**
 * grpc-js answers an undecodable request with INTERNAL, which blames the
 * runtime for a client's mistake. Decoding is wrapped so that such a request
 * reaches our wrapper and gets INVALID_ARGUMENT with the decoder's reason.
 */
function tolerantDefinition(def: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(def)) {
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return method.requestDeserialize(bytes);
        } catch (e) {
          return { [MALFORMED]: messageOf(e) } satisfies Malformed;
        }
      },
    };
  }
  return out;
}

function rejectMalformed(service: string, rpc: string, req: unknown): void {
  if (typeof req === 'object' && req !== null && MALFORMED in req) {
    throw invalidArgument(`${service}/${rpc}: the request could not be decoded as runtime.v1.${rpc}Request: ${(req as Malformed)[MALFORMED]}`);
  }
}

type AnyHandler = (svc: CriServices, req: unknown, extra?: unknown) => Promise<unknown>;

function implementation(
  serviceName: string,
  def: grpc.ServiceDefinition,
  table: Record<string, AnyHandler | undefined>,
  svc: CriServices,
): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [rpc, method] of Object.entries(def)) {
    const handler = table[rpc] ?? (async () => {
      throw unimplemented(`podvisor does not implement ${serviceName}/${rpc} yet`);
    });
    if (method.responseStream) {
      impl[rpc] = (call: grpc.ServerWritableStream<unknown, unknown>) => {
        const started = performance.now();
        Promise.resolve()
          .then(() => {
            rejectMalformed(serviceName, rpc, call.request);
            return handler(svc, call.request, call);
          })
          .then(
            () => {
              log.debug({ rpc, ms: elapsed(started) }, 'stream ended');
              call.end();
            },
            (e) => {
              log.debug({ rpc, ms: elapsed(started), err: messageOf(e) }, 'stream failed');
              const err = toServiceError(e);
              criErrorsTotal.inc({ rpc, code: grpc.status[err.code ?? 2] ?? 'UNKNOWN' });
              call.emit('error', err);
            },
          );
      };
    } else {
      impl[rpc] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const started = performance.now();
        const giveUp = callAbort(call, rpc);
        Promise.resolve()
          .then(() => {
            rejectMalformed(serviceName, rpc, call.request);
            return handler(svc, call.request, { signal: giveUp.signal });
          })
          .finally(() => giveUp.done())
          .then(
            (res) => {
              log.debug({ rpc, ms: elapsed(started) }, 'ok');
              callback(null, res);
            },
            (e) => {
              const err = toServiceError(e);
              // Expected refusals are the caller's business; unexpected ones are ours.
              const level = err.code === grpc.status.INTERNAL ? 'error' : 'debug';
              criErrorsTotal.inc({ rpc, code: grpc.status[err.code ?? 2] ?? 'UNKNOWN' });
              log[level]({ rpc, ms: elapsed(started), code: grpc.status[err.code ?? 2], err: err.details }, 'failed');
              callback(err, null);
            },
          );
      };
    }
  }
  return impl;
}

/**
 * An AbortSignal for one unary call: aborted with DEADLINE_EXCEEDED when the caller's deadline
 * passes, or CANCELLED when the caller goes away, so long work (a VM boot) stops and undoes itself.
 */
function callAbort(call: grpc.ServerUnaryCall<unknown, unknown>, rpc: string): { signal: AbortSignal; done(): void } {
  const ac = new AbortController();
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  const expire = () => ac.abort(deadlineExceeded(`${rpc}: the caller's deadline passed`));
  const timer = Number.isFinite(at) ? setTimeout(expire, Math.max(0, at - Date.now())) : undefined;
  const onCancel = () => (Number.isFinite(at) && Date.now() >= at ? expire() : ac.abort(cancelled(`${rpc}: the caller cancelled the call`)));
  call.once('cancelled', onCancel);
  return {
    signal: ac.signal,
    done() {
      clearTimeout(timer);
      call.off('cancelled', onCancel);
    },
  };
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}

export interface CriServer {
  /** Stops accepting calls, lets calls in flight finish (up to `graceMs`), then closes the rest. */
  close(graceMs?: number): Promise<void>;
}

/** Serves both CRI services on a unix socket that only root (the owner) can open. */
export async function startCriServer(
  svc: CriServices,
  socketPath: string,
  tables: { runtime: RuntimeHandlerTable; image: ImageHandlerTable } = { runtime: runtimeHandlers, image: imageHandlers },
): Promise<CriServer> {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': CRI_MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': CRI_MAX_MESSAGE_BYTES,
  });
  server.addService(
    tolerantDefinition(RuntimeService as unknown as grpc.ServiceDefinition),
    implementation('RuntimeService', RuntimeService as unknown as grpc.ServiceDefinition, tables.runtime as Record<string, AnyHandler>, svc),
  );
  server.addService(
    tolerantDefinition(ImageService as unknown as grpc.ServiceDefinition),
    implementation('ImageService', ImageService as unknown as grpc.ServiceDefinition, tables.image as Record<string, AnyHandler>, svc),
  );

  // The socket must never exist with looser permissions, not even for a moment.
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
  } finally {
    process.umask(oldMask);
  }
  chmodSync(socketPath, 0o600);

  return {
    close: (graceMs = 10_000) =>
      new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          log.warn({ graceMs }, 'calls still in flight after the grace period; closing them');
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}
