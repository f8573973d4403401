import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDirectory as syncDir, writeFileAtomic } from '../util/atomic-file.js';
import type { ContainerRecord, SandboxRecord } from './records.js';
import { logger } from '../log.js';

const log = logger('pod-store');

const SANDBOX_FILE = 'sandbox.json';
const CONTAINERS_DIR = 'containers';
const ID = /^[0-9a-f]{64}$/;

export interface LoadedSandbox {
  sandbox: SandboxRecord;
  containers: ContainerRecord[];
}

/**
 * Sandboxes and containers on disk: `<root>/<sandboxId>/sandbox.json` and
 * `<root>/<sandboxId>/containers/<containerId>.json`. One directory per sandbox,
 * so removing a sandbox is one `rm -r`, and a person can read the state with `cat`.
 */
export class StateStore {
  constructor(readonly root: string) {}

  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
  }

  sandboxDir(id: string): string {
    return join(this.root, id);
  }

  /** Makes the sandbox's directory before anything else exists, so a crash mid-create leaves a findable orphan. */
  async prepareSandboxDir(id: string): Promise<void> {
    await mkdir(join(this.sandboxDir(id), CONTAINERS_DIR), { recursive: true, mode: 0o700 });
  }

  async saveSandbox(record: SandboxRecord): Promise<void> {
    const dir = this.sandboxDir(record.id);
    await mkdir(join(dir, CONTAINERS_DIR), { recursive: true, mode: 0o700 });
    await writeFileAtomic(join(dir, SANDBOX_FILE), JSON.stringify(record, null, 2) + '\n');
  }

  async saveContainer(record: ContainerRecord): Promise<void> {
    const dir = join(this.sandboxDir(record.sandboxId), CONTAINERS_DIR);
    await writeFileAtomic(join(dir, `${record.id}.json`), JSON.stringify(record, null, 2) + '\n');
  }

  async removeContainer(sandboxId: string, containerId: string): Promise<void> {
    const dir = join(this.sandboxDir(sandboxId), CONTAINERS_DIR);
    await rm(join(dir, `${containerId}.json`), { force: true });
    await syncDir(dir).catch(() => undefined);
  }

  async removeSandbox(id: string): Promise<void> {
    await rm(this.sandboxDir(id), { recursive: true, force: true });
    await syncDir(this.root).catch(() => undefined);
  }

  /**
   * Everything on disk. A sandbox directory without a readable sandbox.json is
   * what a crash in the middle of RunPodSandbox leaves (the directory is made
   * first); it is reported in `orphans` so recovery can clean up after it.
   */
  async loadAll(): Promise<{ sandboxes: LoadedSandbox[]; orphans: string[] }> {
    const sandboxes: LoadedSandbox[] = [];
    const orphans: string[] = [];
    let entries: string[];
    try {
      entries = await readdir(this.root);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { sandboxes, orphans };
      throw e;
    }
    for (const name of entries.sort()) {
      if (!ID.test(name)) continue;
      const dir = this.sandboxDir(name);
      const sandbox = await readJson<SandboxRecord>(join(dir, SANDBOX_FILE));
      if (!sandbox || sandbox.id !== name) {
        orphans.push(name);
        continue;
      }
      const containers: ContainerRecord[] = [];
      const cdir = join(dir, CONTAINERS_DIR);
      for (const file of (await readdir(cdir).catch(() => [] as string[])).sort()) {
        if (!file.endsWith('.json') || !ID.test(file.slice(0, -5))) continue;
        const c = await readJson<ContainerRecord>(join(cdir, file));
        if (c && c.sandboxId === name) containers.push(c);
        else log.warn({ file: join(cdir, file) }, 'ignoring unreadable container record');
      }
      sandboxes.push({ sandbox, containers });
    }
    return { sandboxes, orphans };
  }
}

async function readJson<T>(path: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    log.warn({ path }, 'state record is not valid JSON');
    return undefined;
  }
}
