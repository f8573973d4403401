import { join } from 'node:path';
import { logger } from '../log.js';
import type { SandboxNetworks } from '../network/sandbox-networks.js';
import { ContainerService } from './container-service.js';
import { PodContext, type AgentConnector, type PodSettings } from './pod-context.js';
import type { PodImages } from './images.js';
import { OperatorAccess } from './operator-access.js';
import { recover } from './recovery.js';
import { ResourcesService } from './resources-service.js';
import { SandboxService } from './sandbox-service.js';
import { StateStore } from './state-store.js';
import { StatsService } from './stats-service.js';
import { StreamService } from './stream-service.js';
import type { ContainerEventBus } from './events.js';

const log = logger('pod');

export interface PodServicesOptions {
  /** Persistent records: `<dir>/<sandboxId>/sandbox.json` … (under the daemon's root). */
  recordsDir: string;
  settings: PodSettings;
  images: PodImages;
  connectAgent: AgentConnector;
  network?: SandboxNetworks;
}

/** Everything the CRI handlers for pods and containers call. */
export interface PodServices {
  sandboxes: SandboxService;
  containers: ContainerService;
  stats: StatsService;
  /** In-place resize of containers; pod-level resize within the VM's fixed size. */
  resources: ResourcesService;
  events: ContainerEventBus;
  /** Exec, attach and port-forward sessions for the streaming server. */
  streams: StreamService;
  /** The operator tools' way in (CLI admin socket, SSH debug gateway). */
  operator: OperatorAccess;
  /** Lets go of VMs and agent connections without stopping them (daemon shutdown; pods keep running). */
  detach(): Promise<void>;
}

/** Builds the pod services and recovers the state an earlier podvisord left. */
export async function createPodServices(opts: PodServicesOptions): Promise<PodServices> {
  const store = new StateStore(opts.recordsDir);
  await store.init();
  const ctx = new PodContext(store, opts.images, opts.connectAgent, opts.settings, opts.network);
  const containers = new ContainerService(ctx);
  const sandboxes = new SandboxService(ctx, containers);
  await recover(ctx, sandboxes, containers);
  await ctx.templates.removeLeftovers();
  log.info({ sandboxes: ctx.index.allSandboxes().length, containers: ctx.index.allContainers().length }, 'pod state loaded');
  return {
    sandboxes,
    containers,
    stats: new StatsService(ctx),
    resources: new ResourcesService(ctx),
    events: ctx.events,
    streams: new StreamService(ctx),
    operator: new OperatorAccess(ctx),
    async detach() {
      await ctx.templates.close(); // a template build does not outlive its daemon
      for (const w of ctx.logWriters.values()) await w.flush().catch(() => undefined);
      for (const rt of ctx.runtimes.values()) {
        rt.stopping = true; // the VM keeps running; its exit from now on is the next daemon's business
        rt.agent.close();
        rt.vm.detach();
      }
    },
  };
}

/** The default places under the daemon's root and state directories. */
export function podDirs(root: string, state: string): { recordsDir: string; vmRunRoot: string } {
  return { recordsDir: join(root, 'pods'), vmRunRoot: join(state, 'vms') };
}
