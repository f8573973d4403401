// Logging first: every other module's module-level logger must be a child of the agent's root.
import { hub } from './log-setup.js';
import { readFileSync, writeFileSync } from 'node:fs';
import v8 from 'node:v8';
import { agentCodecs, eventCodec } from '../src/agent-protocol/api.js';
import { prepareAllTypes } from '../src/agent-protocol/schema.js';
import { logger } from '../src/log.js';
import { servePort } from './channel.js';
import { ContainerManager } from './containers.js';
import { forwardKernelLog } from './guest-log.js';
import { GuestShells } from './guest-shell.js';
import { agentServer } from './service.js';

/**
 * podvisor's guest agent: serves the agent API (ttRPC) on the virtio-serial
 * port `podvisor.agent`, started by the guest's PID 1 (images/guest/stage2-init).
 *
 * The guest starts it from a V8 startup snapshot taken after this bundle had
 * loaded (hack/build-guest-image): module code, including the proto parsing
 * warmed up below, ran on the build host; `main` runs in the guest.
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

function main(): void {
  const log = logger('agent');
  const starts = countStart();
  forwardKernelLog(hub, uptimeSeconds);
  const containers = new ContainerManager(hub);
  const server = agentServer({ hub, containers, shells: new GuestShells(hub), starts, uptimeSeconds, powerOff: () => process.exit(0) });

  process.on('uncaughtException', (err) => log.error({ err: err.stack ?? err.message }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => log.error({ err: String(err) }, 'unhandled rejection'));

  log.info({ uptime: uptimeSeconds(), starts, pid: process.pid, node: process.version }, 'agent ready');
  void servePort((socket) => server.serve(socket));
}

if (v8.startupSnapshot?.isBuildingSnapshot()) {
  // Parse the agent proto now so the snapshot carries the codecs, with every message type's
  // generated encoder and decoder already built (the guest's first calls would build them).
  agentCodecs();
  eventCodec();
  prepareAllTypes();
  v8.startupSnapshot.setDeserializeMainFunction(main);
} else {
  main();
}
