import { join } from 'node:path';
import { readJsonFile, writeJsonAtomicSync } from '../../util/atomic-file.js';
import { privateDir } from '../../util/private-dir.js';

/**
 * Which sandbox and container ids belong to the pass-through runtime. Every
 * call that names an id is routed by this table: an id in it goes to the
 * pass-through runtime, any other id to podvisor's VMs. It lives in
 * `<state>/passthrough/routes.json`, rewritten atomically on every change
 * (src/util/atomic-file.ts), so a podvisord restart, even after kill -9,
 * routes every call as before.
 *
 * The one window a crash can open is between the pass-through runtime
 * creating an object and this file naming it; `adopt` closes it: the routed
 * List* answers and the start-up reconciliation add any id the pass-through
 * runtime reports that the table lacks.
 */
interface RoutesFile {
  version: 1;
  /** sandbox id → runtime handler it was started with */
  sandboxes: Record<string, { handler: string }>;
  /** container id → its sandbox id */
  containers: Record<string, string>;
}

export class RouteTable {
  private readonly file: string;
  private readonly data: RoutesFile;

  constructor(stateDir: string) {
    const dir = join(stateDir, 'passthrough');
    privateDir(dir);
    this.file = join(dir, 'routes.json');
    const found = readJsonFile<RoutesFile>(this.file);
    this.data = found && found.version === 1
      ? { version: 1, sandboxes: { ...found.sandboxes }, containers: { ...found.containers } }
      : { version: 1, sandboxes: {}, containers: {} };
  }

  /** The full id of a pass-through sandbox, given its id or a unique prefix of it. */
  sandbox(idOrPrefix: string): string | undefined {
    return resolve(Object.keys(this.data.sandboxes), idOrPrefix);
  }

  container(idOrPrefix: string): string | undefined {
    return resolve(Object.keys(this.data.containers), idOrPrefix);
  }

  get sandboxCount(): number {
    return Object.keys(this.data.sandboxes).length;
  }

  sandboxIds(): string[] {
    return Object.keys(this.data.sandboxes);
  }

  containerIds(): string[] {
    return Object.keys(this.data.containers);
  }

  addSandbox(id: string, handler: string): void {
    this.data.sandboxes[id] = { handler };
    this.save();
  }

  addContainer(id: string, sandboxId: string): void {
    this.data.containers[id] = sandboxId;
    this.save();
  }

  /** Forgets a sandbox and every container in it (after the pass-through runtime removed them). */
  removeSandbox(id: string): void {
    delete this.data.sandboxes[id];
    for (const [c, s] of Object.entries(this.data.containers)) if (s === id) delete this.data.containers[c];
    this.save();
  }

  removeContainer(id: string): void {
    delete this.data.containers[id];
    this.save();
  }

  /**
   * Takes in ids the pass-through runtime reports (from a List* answer) that
   * the table lacks. Never drops: a list taken while a RunPodSandbox is in
   * flight may not show its pod yet.
   */
  adopt(sandboxes: { id: string; handler: string }[], containers: { id: string; sandboxId: string }[]): void {
    let changed = false;
    for (const s of sandboxes) {
      if (!this.data.sandboxes[s.id]) {
        this.data.sandboxes[s.id] = { handler: s.handler };
        changed = true;
      }
    }
    for (const c of containers) {
      if (this.data.containers[c.id] === undefined) {
        this.data.containers[c.id] = c.sandboxId;
        changed = true;
      }
    }
    if (changed) this.save();
  }

  /** At start-up, before any call is served: forget ids the pass-through runtime no longer has (removed while podvisord was down). */
  prune(liveSandboxes: Set<string>, liveContainers: Set<string>): string[] {
    const gone = [
      ...Object.keys(this.data.sandboxes).filter((id) => !liveSandboxes.has(id)),
      ...Object.keys(this.data.containers).filter((id) => !liveContainers.has(id)),
    ];
    for (const id of gone) {
      delete this.data.sandboxes[id];
      delete this.data.containers[id];
    }
    if (gone.length > 0) this.save();
    return gone;
  }

  private save(): void {
    writeJsonAtomicSync(this.file, this.data);
  }
}

/** Exact id first, then a prefix that matches exactly one id (CRI clients such as crictl send short ids). */
function resolve(ids: string[], idOrPrefix: string): string | undefined {
  if (idOrPrefix === '') return undefined;
  if (ids.includes(idOrPrefix)) return idOrPrefix;
  const matches = ids.filter((id) => id.startsWith(idOrPrefix));
  return matches.length === 1 ? matches[0] : undefined;
}
