import { codec, agentMethods, type MessageCodec } from './schema.js';
import type { AgentApi, AgentEvent, AgentMethod } from './types.js';

/** Encoders/decoders for every RPC's request and response, built from the proto. */
export type AgentCodecs = { [M in AgentMethod]: { request: MessageCodec<AgentApi[M][0]>; response: MessageCodec<AgentApi[M][1]> } };

let cached: AgentCodecs | undefined;

export function agentCodecs(): AgentCodecs {
  if (cached) return cached;
  const built: Record<string, unknown> = {};
  for (const [name, method] of agentMethods()) {
    if (method.serverStreaming) continue;
    built[name] = { request: codec(method.requestType), response: codec(method.responseType) };
  }
  cached = built as AgentCodecs;
  return cached;
}

export const eventCodec = (): MessageCodec<AgentEvent> => codec<AgentEvent>('Event');

/** The GetEvents stream's request: the host's last seen event sequence, so the agent re-sends what came after. */
export const getEventsRequestCodec = (): MessageCodec<{ afterSequence: number }> => codec<{ afterSequence: number }>('GetEventsRequest');
