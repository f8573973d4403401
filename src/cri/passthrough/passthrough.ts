import type { PassthroughConfig } from '../../config/config.js';
import { messageOf, type PodvisorError } from '../../errors.js';
import { logger } from '../../log.js';
import { PassthroughEvents } from './events.js';
import { RemoteRuntime } from './remote-runtime.js';
import { RouteTable } from './route-table.js';

const log = logger('passthrough');

/** Start-up reconciliation asks the other runtime for its pods; it must not hold the daemon's start. */
const RECONCILE_TIMEOUT_MS = 15_000;
const REFUSAL_LOG_INTERVAL_MS = 10 * 60_000;
/** The other runtime chooses the messages; the memory of them stays small. */
const MAX_REMEMBERED_REFUSALS = 256;

/**
 * Everything the routed CRI handlers (routed-handlers.ts) need to send pods to
 * the co-installed runtime: the operator's rules, the client, the persisted
 * route table, and the VM handler names (for the rules' refusals).
 */
export interface Passthrough {
  rules: PassthroughConfig;
  remote: RemoteRuntime;
  routes: RouteTable;
  vmHandlers: string[];
  health: RemoteHealth;
  events: PassthroughEvents;
  close(): void;
}

/**
 * Opens the route table under the state dir and reconciles it with what the
 * other runtime runs: ids it reports that the table lacks (a kill -9 between
 * its answer and the table's write) are taken in; ids it no longer has are
 * forgotten. If it does not answer, the table is kept as it is: its pods'
 * calls answer UNAVAILABLE until it is back, and VM pods are not affected.
 */
export async function openPassthrough(rules: PassthroughConfig, stateDir: string, vmHandlers: string[]): Promise<Passthrough> {
  const remote = new RemoteRuntime(rules.endpoint);
  const routes = new RouteTable(stateDir);
  const health = new RemoteHealth(rules.endpoint);
  try {
    const [pods, containers] = await Promise.all([
      remote.call('ListPodSandbox', {}, RECONCILE_TIMEOUT_MS),
      remote.call('ListContainers', {}, RECONCILE_TIMEOUT_MS),
    ]);
    const gone = routes.prune(new Set(pods.items.map((p) => p.id)), new Set(containers.containers.map((c) => c.id)));
    routes.adopt(
      pods.items.map((p) => ({ id: p.id, handler: p.runtime_handler })),
      containers.containers.map((c) => ({ id: c.id, sandboxId: c.pod_sandbox_id })),
    );
    log.info({ endpoint: rules.endpoint, pods: routes.sandboxCount, forgotten: gone.length }, 'pass-through runtime reconciled');
  } catch (e) {
    health.failed(e as PodvisorError, 'start-up reconciliation');
    log.warn({ endpoint: rules.endpoint, pods: routes.sandboxCount }, 'pass-through runtime did not answer at start; its pods are routed by the saved table');
  }
  return {
    rules, remote, routes, vmHandlers, health,
    events: new PassthroughEvents(remote),
    close: () => remote.close(),
  };
}

/**
 * Whether the other runtime answers, for the log: one line when it goes away
 * and one when it is back, not one per kubelet relist.
 */
export class RemoteHealth {
  private down = false;
  /** When each refusal (rpc + message) was last logged: kubelet repeats node-wide calls every few seconds. */
  private readonly refusals = new Map<string, number>();

  constructor(private readonly endpoint: string) {}

  answered(): void {
    if (this.down) log.info({ endpoint: this.endpoint }, 'pass-through runtime answers again');
    this.down = false;
  }

  failed(e: PodvisorError, rpc: string): void {
    const unreachable = e?.code === 'UNAVAILABLE' || e?.code === 'DEADLINE_EXCEEDED';
    if (unreachable && !this.down) log.warn({ endpoint: this.endpoint, rpc, err: messageOf(e) }, 'pass-through runtime does not answer; lists show VM pods only until it is back');
    else if (!unreachable && this.firstInAWhile(`${rpc}\0${messageOf(e)}`)) {
      log.warn({ endpoint: this.endpoint, rpc, err: messageOf(e) }, 'pass-through runtime refused a node-wide call; its part of the answer is left out (logged again in 10 minutes if it persists)');
    }
    if (unreachable) this.down = true;
  }

  private firstInAWhile(key: string): boolean {
    const now = Date.now();
    const last = this.refusals.get(key);
    if (last !== undefined && now - last < REFUSAL_LOG_INTERVAL_MS) return false;
    if (this.refusals.size >= MAX_REMEMBERED_REFUSALS) this.refusals.clear();
    this.refusals.set(key, now);
    return true;
  }
}
