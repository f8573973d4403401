import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { countFields } from './field-count.js';

/**
 * The agent API schema (proto/agent.proto), loaded once for host and guest.
 * The guest bundle has the proto text compiled in (esbuild defines
 * __AGENT_PROTO_TEXT__); on the host it is read from the repository.
 */
declare const __AGENT_PROTO_TEXT__: string | undefined;

export const AGENT_SERVICE = 'podvisor.agent.v1.Agent';
export const AGENT_API_VERSION = 'podvisor.agent.v1';

function protoText(): string {
  if (typeof __AGENT_PROTO_TEXT__ === 'string') return __AGENT_PROTO_TEXT__;
  return readFileSync(fileURLToPath(new URL('../../proto/agent.proto', import.meta.url)), 'utf8');
}

let cached: protobuf.Root | undefined;

function root(): protobuf.Root {
  cached ??= protobuf.parse(protoText(), { keepCase: false }).root;
  return cached;
}

export interface MessageCodec<T> {
  encode(value: T): Uint8Array;
  /** Throws on malformed bytes. */
  decode(bytes: Uint8Array): T;
  /** Fields the bytes hold at every depth, counted without decoding (stops past `limit`; see field-count.ts). */
  countFields(bytes: Uint8Array, limit: number): number;
}

const toObjectOptions = { longs: Number, enums: String, defaults: true, arrays: true, oneofs: true } as const;

export function codec<T>(messageName: string): MessageCodec<T> {
  const type = root().lookupType(`${AGENT_API_VERSION}.${messageName}`);
  return {
    encode: (value) => type.encode(type.fromObject(value as Record<string, unknown>)).finish(),
    decode: (bytes) => type.toObject(type.decode(bytes), toObjectOptions) as T,
    countFields: (bytes, limit) => countFields(type, bytes, limit),
  };
}

/**
 * Builds every message type's generated encoder and decoder now, and runs each once: protobufjs
 * generates them (as new Function source) on a type's first use. The guest agent calls this while
 * its V8 startup snapshot is built, so the guest does not generate and compile them on its first
 * calls, which are a pod's set-up: under TCG that took the boot-phase Health call from 1.86 to
 * 0.25 s and the guest NIC from 4.30 to 2.18 s (bench/guest-setup.ts, README).
 */
export function prepareAllTypes(): void {
  const visit = (ns: protobuf.NamespaceBase): void => {
    for (const nested of ns.nestedArray) {
      if (nested instanceof protobuf.Type) {
        const type = nested.setup();
        type.toObject(type.decode(type.encode(type.fromObject({})).finish()), toObjectOptions);
      }
      if (nested instanceof protobuf.Namespace) visit(nested);
    }
  };
  visit(root());
}

/** Request and response message names of every RPC, from the service definition. */
export function agentMethods(): Map<string, { requestType: string; responseType: string; serverStreaming: boolean }> {
  const service = root().lookupService(AGENT_SERVICE);
  return new Map(service.methodsArray.map((m) => [m.name, { requestType: m.requestType, responseType: m.responseType, serverStreaming: !!m.responseStream }]));
}
