import { chmodSync, existsSync, lstatSync, mkdirSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * kubelet's on-disk volume layout, built the way kubelet builds it, for tests
 * and benchmarks that hand podvisor real-looking CRI mounts:
 *   /var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>
 * configMap, secret, projected and downwardAPI volumes use kubelet's atomic
 * writer: the payload goes into a fresh `..<timestamp>` directory, the
 * `..data` symlink is swapped to it with a rename, each key is a symlink
 * `key -> ..data/key`, and the old timestamped directory is removed.
 */

export interface AtomicFile {
  data: string;
  /** File mode (kubelet's defaultMode / per-item mode); 0644 when absent. */
  mode?: number;
}

let seq = 0;

/** Writes (or updates) an atomic-writer volume directory with exactly `files`. */
export function writeAtomicVolume(dir: string, files: Record<string, AtomicFile>): void {
  mkdirSync(dir, { recursive: true });
  const stamp = `..${new Date().toISOString().replace(/[-:]/g, '_').replace('T', '_').replace('Z', '')}.${process.pid}${seq++}`;
  const payload = join(dir, stamp);
  mkdirSync(payload, { mode: 0o755 });
  for (const [key, f] of Object.entries(files)) {
    const path = join(payload, key);
    writeFileSync(path, f.data);
    chmodSync(path, f.mode ?? 0o644);
  }
  const dataLink = join(dir, '..data');
  const old = existsSync(dataLink) ? readlinkSync(dataLink) : undefined;
  const tmpLink = join(dir, '..data_tmp');
  rmSync(tmpLink, { force: true });
  symlinkSync(stamp, tmpLink);
  renameSync(tmpLink, dataLink);
  for (const key of Object.keys(files)) {
    const link = join(dir, key);
    if (!lstatExists(link)) symlinkSync(join('..data', key), link);
  }
  if (old) rmSync(join(dir, old), { recursive: true, force: true });
}

function lstatExists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** One pod's kubelet directory. */
export class KubeletPod {
  readonly dir: string;
  constructor(root: string, readonly uid: string) {
    this.dir = join(root, 'pods', uid);
  }

  volume(plugin: string, name: string): string {
    return join(this.dir, 'volumes', `kubernetes.io~${plugin}`, name);
  }

  /** An emptyDir (plain directory, mode 0777 as kubelet makes it). */
  emptyDir(name: string): string {
    const d = this.volume('empty-dir', name);
    mkdirSync(d, { recursive: true });
    chmodSync(d, 0o777);
    return d;
  }

  /** kubelet's etc-hosts file for the pod. */
  etcHosts(content: string): string {
    mkdirSync(this.dir, { recursive: true });
    const f = join(this.dir, 'etc-hosts');
    writeFileSync(f, content);
    return f;
  }

  /** The termination-log file kubelet makes for one container run. */
  terminationLog(container: string, runId: string): string {
    const d = join(this.dir, 'containers', container);
    mkdirSync(d, { recursive: true });
    const f = join(d, runId);
    writeFileSync(f, '');
    chmodSync(f, 0o666);
    return f;
  }
}
