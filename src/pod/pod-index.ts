import { alreadyExists } from '../errors.js';
import { requireId, resolveIdPrefix } from './ids.js';
import type { ContainerMetadata, ContainerRecord, PodMetadata, SandboxRecord } from './records.js';

/** The name kubelet may reuse only after removing the first owner (containerd's naming rule). */
export function sandboxNameKey(m: PodMetadata): string {
  return `${m.name}_${m.namespace}_${m.uid}_${m.attempt}`;
}

export function containerNameKey(sandboxId: string, m: ContainerMetadata): string {
  return `${sandboxId}/${m.name}_${m.attempt}`;
}

/**
 * The in-memory view of every sandbox and container, plus the name reservations
 * that make a duplicate RunPodSandbox/CreateContainer fail with AlreadyExists
 * *before* any VM or disk is made. Records here are the same objects the store
 * persists; services mutate them and then save.
 */
export class PodIndex {
  private readonly sandboxes = new Map<string, SandboxRecord>();
  private readonly containers = new Map<string, ContainerRecord>();
  private readonly names = new Map<string, string>();

  /** Claims a name for `id`; throws AlreadyExists naming the current owner. */
  reserveName(key: string, id: string, kind: string): void {
    const owner = this.names.get(key);
    if (owner !== undefined && owner !== id) {
      throw alreadyExists(`${kind} name "${key}" is already reserved by ${kind} ${owner}; remove it first or use another attempt number`);
    }
    this.names.set(key, id);
  }

  releaseName(key: string, id: string): void {
    if (this.names.get(key) === id) this.names.delete(key);
  }

  addSandbox(s: SandboxRecord): void {
    this.sandboxes.set(s.id, s);
  }

  addContainer(c: ContainerRecord): void {
    this.containers.set(c.id, c);
  }

  deleteSandbox(id: string): void {
    this.sandboxes.delete(id);
  }

  deleteContainer(id: string): void {
    this.containers.delete(id);
  }

  /** The sandbox for an id or unique prefix; NotFound when none. */
  sandbox(query: string): SandboxRecord {
    return this.sandboxes.get(requireId(query, this.sandboxes.keys(), 'sandbox'))!;
  }

  findSandbox(query: string): SandboxRecord | undefined {
    const id = resolveIdPrefix(query, this.sandboxes.keys(), 'sandbox');
    return id === undefined ? undefined : this.sandboxes.get(id);
  }

  container(query: string): ContainerRecord {
    return this.containers.get(requireId(query, this.containers.keys(), 'container'))!;
  }

  findContainer(query: string): ContainerRecord | undefined {
    const id = resolveIdPrefix(query, this.containers.keys(), 'container');
    return id === undefined ? undefined : this.containers.get(id);
  }

  /** Exact-id lookup, for ids a guest supplies (never resolved as a prefix). */
  containerById(id: string): ContainerRecord | undefined {
    return this.containers.get(id);
  }

  allSandboxes(): SandboxRecord[] {
    return [...this.sandboxes.values()];
  }

  allContainers(): ContainerRecord[] {
    return [...this.containers.values()];
  }

  containersOf(sandboxId: string): ContainerRecord[] {
    return this.allContainers().filter((c) => c.sandboxId === sandboxId);
  }
}
