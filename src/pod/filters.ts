import type { ContainerRecord, ContainerState, SandboxRecord, SandboxState } from './records.js';
import type { PodIndex } from './pod-index.js';

/** ListPodSandbox / ListPodSandboxStats filter; empty fields match everything. */
export interface SandboxFilter {
  id?: string;
  state?: SandboxState;
  labelSelector?: Record<string, string>;
}

/** ListContainers / ListContainerStats filter; empty fields match everything. */
export interface ContainerFilter {
  id?: string;
  state?: ContainerState;
  podSandboxId?: string;
  labelSelector?: Record<string, string>;
}

/** Every selector pair must be present with the same value (CRI: "AND"). */
export function labelsMatch(labels: Record<string, string>, selector: Record<string, string> | undefined): boolean {
  if (!selector) return true;
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/**
 * Ids in filters may be unique prefixes, as with containerd; a prefix that
 * matches nothing (or is ambiguous) yields an empty list rather than an error,
 * because List* never fails for a filter that selects nothing.
 */
function resolveOrNothing(find: () => { id: string } | undefined): string | null {
  try {
    return find()?.id ?? null;
  } catch {
    return null;
  }
}

export function filterSandboxes(index: PodIndex, filter: SandboxFilter = {}): SandboxRecord[] {
  let list = index.allSandboxes();
  if (filter.id) {
    const id = resolveOrNothing(() => index.findSandbox(filter.id!));
    list = list.filter((s) => s.id === id);
  }
  if (filter.state) list = list.filter((s) => s.state === filter.state);
  list = list.filter((s) => labelsMatch(s.config.labels, filter.labelSelector));
  return list.sort(byCreation);
}

export function filterContainers(index: PodIndex, filter: ContainerFilter = {}): ContainerRecord[] {
  let list = index.allContainers();
  if (filter.id) {
    const id = resolveOrNothing(() => index.findContainer(filter.id!));
    list = list.filter((c) => c.id === id);
  }
  if (filter.podSandboxId) {
    const sid = resolveOrNothing(() => index.findSandbox(filter.podSandboxId!));
    list = list.filter((c) => c.sandboxId === sid);
  }
  if (filter.state) list = list.filter((c) => c.state === filter.state);
  list = list.filter((c) => labelsMatch(c.config.labels, filter.labelSelector));
  return list.sort(byCreation);
}

function byCreation(a: { createdAt: string }, b: { createdAt: string }): number {
  const x = BigInt(a.createdAt), y = BigInt(b.createdAt);
  return x < y ? -1 : x > y ? 1 : 0;
}
