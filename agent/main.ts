import { readFileSync, writeFileSync } from 'node:fs';
import { configureLogging, logger } from '../src/log.js';
import { servePort } from './channel.js';
import { ContainerManager } from './containers.js';
import { EventHub } from './events.js';
import { agentLogDestination, forwardKernelLog } from './guest-log.js';
import { agentServer } from './service.js';

/**
 * podvisor's guest agent: serves the agent API (ttRPC) on the virtio-serial
 * port `podvisor.agent`, started by the guest's PID 1 (images/guest/stage2-init).
 */
const STARTS_FILE = '/run/podvisor/agent-starts';

function uptimeSeconds(): number {
  return Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
}

function countStart(): number {
  let starts = 0;
  try {
    starts = Number(readFileSync(STARTS_FILE, 'utf8')) || 0;
  } catch {
    // first start in this VM
  }
  starts += 1;
  writeFileSync(STARTS_FILE, String(starts));
  return starts;
}

const hub = new EventHub();
configureLogging(process.env.PODVISOR_AGENT_LOG_LEVEL ?? 'info', agentLogDestination(hub));
const log = logger('agent');
const starts = countStart();
forwardKernelLog(hub, uptimeSeconds);
const containers = new ContainerManager(hub);
const server = agentServer({ hub, containers, starts, uptimeSeconds, powerOff: () => process.exit(0) });

process.on('uncaughtException', (err) => log.error({ err: err.stack ?? err.message }, 'uncaught exception'));
process.on('unhandledRejection', (err) => log.error({ err: String(err) }, 'unhandled rejection'));

log.info({ uptime: uptimeSeconds(), starts, node: process.version }, 'agent ready');
void servePort((socket) => server.serve(socket));
