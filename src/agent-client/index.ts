export { AgentClient, type AgentClientEvents, type AgentConnectOptions } from './client.js';
export { AGENT_API_VERSION, AGENT_SERVICE } from './schema.js';
export type * from './types.js';
