import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { agentCodecs, eventCodec, getEventsRequestCodec } from '../src/agent-protocol/api.js';
import { AGENT_API_VERSION, AGENT_SERVICE, codec } from '../src/agent-protocol/schema.js';
import type { AgentApi, AgentMethod, DialPortRequest, PortData } from '../src/agent-protocol/types.js';
import { invalidArgument, messageOf } from '../src/errors.js';
import { logger } from '../src/log.js';
import { TtrpcServer } from '../src/ttrpc/index.js';
import type { ContainerManager } from './containers.js';
import type { EventHub } from './events.js';
import type { GuestShells } from './guest-shell.js';
import { configureNetwork } from './network.js';
import { PortForwarder } from './port-forward.js';
import { run } from './run.js';
import { setupSandbox } from './sandbox.js';
import { mountDisk, mountOverlay, readFileInTree, resolvePathInTree, unmount } from './storage.js';
import { readVolume, removeVolume, watchVolumes, writeVolume } from './volume-copies.js';

const log = logger('agent');

declare const __AGENT_VERSION__: string | undefined;
const AGENT_VERSION = typeof __AGENT_VERSION__ === 'string' ? __AGENT_VERSION__ : 'dev';

export interface AgentDeps {
  hub: EventHub;
  containers: ContainerManager;
  /** Debug shells in the guest itself: processes named with container id "". */
  shells: GuestShells;
  starts: number;
  uptimeSeconds: () => number;
  /** Stops the agent and powers the VM off; called after the Shutdown reply is on its way. */
  powerOff: () => void;
}

type Handlers = { [M in AgentMethod]: (req: AgentApi[M][0]) => Promise<AgentApi[M][1]> };

let crunVersion: string | undefined;

/** The agent API on a ttRPC server: one handler per RPC in proto/agent.proto. */
export function agentServer(deps: AgentDeps): TtrpcServer {
  const { containers, hub, shells } = deps;
  const ports = new PortForwarder();
  const handlers: Handlers = {
    Health: async () => {
      const uptimeSeconds = deps.uptimeSeconds();
      return { status: 'SERVING', uptimeSeconds, agentPid: process.pid, starts: deps.starts, agentStartUptimeSeconds: Math.max(0, uptimeSeconds - process.uptime()) };
    },
    Version: async () => {
      crunVersion ??= (await run('crun', ['--version'])).stdout.split('\n')[0].replace(/^crun version /, '');
      return {
        agentVersion: AGENT_VERSION,
        apiVersion: AGENT_API_VERSION,
        kernelRelease: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
        nodeVersion: process.version,
        crunVersion,
      };
    },
    SetupSandbox: async (req) => { await setupSandbox(req); return {}; },
    MountDisk: (req) => mountDisk(req),
    MountOverlay: (req) => mountOverlay(req),
    Unmount: async (req) => { await unmount(req); return {}; },
    ReadFile: (req) => readFileInTree(req),
    ResolvePath: (req) => resolvePathInTree(req),
    CreateContainer: async (req) => { await containers.create(req); return {}; },
    StartContainer: async (req) => ({ pid: await containers.start(req.containerId) }),
    ExecProcess: async (req) => ({ pid: await containers.exec(req) }),
    SignalProcess: async (req) => { await (shells.owns(req) ? shells.signal(req) : containers.signal(req)); return {}; },
    WaitProcess: (req) => (shells.owns(req) ? shells.wait(req) : containers.wait(req)),
    DeleteContainer: async (req) => { await containers.delete(req); return {}; },
    ListContainers: async () => ({ containers: containers.list() }),
    WriteStdin: async (req) => ({ written: await (shells.owns(req) ? shells : containers).writeStdin(req, req.data) }),
    CloseStdin: async (req) => { (shells.owns(req) ? shells : containers).closeStdin(req); return {}; },
    ResizeTty: async (req) => { await (shells.owns(req) ? shells : containers).resize(req, req.rows, req.cols); return {}; },
    ContainerStats: async (req) => containers.stats(req.containerId),
    SandboxStats: async () => containers.sandboxStats(),
    UpdateContainerResources: async (req) => ({ cgroup: await containers.updateResources(req) }),
    StartGuestShell: async (req) => ({ pid: await shells.start(req) }),
    ConfigureNetwork: async (req) => { await configureNetwork(req); return {}; },
    PauseOutput: async (req) => { (shells.owns(req) ? shells : containers).pauseOutput(req, req.paused); return {}; },
    WritePort: async (req) => { await ports.write(req); return {}; },
    ClosePort: async (req) => { ports.close(req); return {}; },
    PausePort: async (req) => { ports.pause(req); return {}; },
    WriteVolume: async (req) => { await writeVolume(req); return {}; },
    ReadVolume: (req) => readVolume(req),
    RemoveVolume: async (req) => { await removeVolume(req); return {}; },
    WatchVolumes: (req) => watchVolumes(req),
    Shutdown: async () => {
      log.info('shutdown requested');
      // Only processes need ending (so that nothing writes to a shared folder during the power-off):
      // everything else lives in guest RAM, and `poweroff -f` in the guest's init syncs.
      shells.killAll();
      containers.killAll();
      await writeFile('/run/podvisor/poweroff', '');
      // Give the reply time to leave before the process exits.
      setTimeout(deps.powerOff, 50);
      return {};
    },
  };

  const server = new TtrpcServer();
  const codecs = agentCodecs();
  for (const method of Object.keys(handlers) as AgentMethod[]) {
    const { request, response } = codecs[method];
    const handler = handlers[method] as (req: unknown) => Promise<unknown>;
    server.unary(AGENT_SERVICE, method, async (payload) => {
      let req: unknown;
      try {
        req = request.decode(payload);
      } catch (err) {
        throw invalidArgument(`${method}: malformed request: ${messageOf(err)}`);
      }
      return response.encode((await handler(req)) as never);
    });
  }

  const events = eventCodec();
  const getEventsRequest = getEventsRequestCodec();
  server.stream(AGENT_SERVICE, 'GetEvents', async (payload, stream) => {
    let afterSequence: number;
    try {
      afterSequence = getEventsRequest.decode(payload).afterSequence;
    } catch (err) {
      throw invalidArgument(`GetEvents: malformed request: ${messageOf(err)}`);
    }
    stream.onDrain(() => hub.flush());
    const unsubscribe = hub.subscribe((event) => {
      if (stream.closed) return 'closed';
      return stream.send(events.encode(event)) ? 'ok' : 'full';
    }, afterSequence > 0 ? afterSequence : undefined); // 0: a new host, no re-sends (see the proto)
    await stream.whenClosed;
    unsubscribe();
  });

  const dialPortRequest = codec<DialPortRequest>('DialPortRequest');
  const portData = codec<PortData>('PortData');
  server.stream(AGENT_SERVICE, 'DialPort', async (payload, stream) => {
    let req: DialPortRequest;
    try {
      req = dialPortRequest.decode(payload);
    } catch (err) {
      throw invalidArgument(`DialPort: malformed request: ${messageOf(err)}`);
    }
    await ports.dial(req, stream, (data) => portData.encode({ data }));
  });
  return server;
}
