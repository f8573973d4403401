export { AgentClient, type AgentClientEvents, type AgentConnectOptions } from './client.js';
export { AGENT_API_VERSION, AGENT_SERVICE } from '../agent-protocol/schema.js';
export type * from '../agent-protocol/types.js';
