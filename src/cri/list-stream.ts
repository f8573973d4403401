import type * as grpc from '@grpc/grpc-js';

/**
 * cri-api 1.36's Stream* RPCs (KEP 5825) answer a List* as a stream: each item
 * once, then EOF (the server ends the call when the handler returns). Items go
 * out in messages of at most CHUNK so no single message nears gRPC's size limit,
 * waiting for the client to drain when its window is full.
 */
const CHUNK = 500;

export async function sendChunks<T, R>(items: T[], call: grpc.ServerWritableStream<unknown, R>, wrap: (chunk: T[]) => R): Promise<void> {
  for (let i = 0; i < items.length && !call.cancelled; i += CHUNK) {
    if (!call.write(wrap(items.slice(i, i + CHUNK)))) {
      // A client that goes away never drains: stop waiting when the call ends.
      await new Promise((resolve) => {
        call.once('drain', resolve);
        call.once('cancelled', resolve);
        call.once('close', resolve);
      });
    }
  }
}
