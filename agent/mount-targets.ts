import { lstatSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * In a user namespace, crun runs as a root that the image's files (owned by the
 * guest's root) do not know, so it cannot create a missing bind-mount target
 * such as /etc/hostname in a root-owned /etc. The agent creates those targets
 * first, as the guest's root. The rootfs is tenant content: every path step is
 * checked with lstat and a symlink stops the walk (crun then reports the target
 * as missing), so nothing is ever created outside the rootfs.
 */
export function createBindTargets(rootfs: string, mounts: Array<{ destination: string; type?: string; source?: string }>): void {
  for (const m of mounts) {
    if (m.type !== 'bind' || !m.source) continue;
    let isDir: boolean;
    try {
      isDir = statSync(m.source).isDirectory();
    } catch {
      continue; // crun reports a missing source itself
    }
    const parts = m.destination.split('/').filter((p) => p !== '' && p !== '.' && p !== '..');
    let at = rootfs;
    for (let i = 0; i < parts.length; i++) {
      at = join(at, parts[i]!);
      const last = i === parts.length - 1;
      let st;
      try {
        st = lstatSync(at);
      } catch {
        st = undefined;
      }
      if (st?.isSymbolicLink()) break;
      if (st) continue;
      if (!last || isDir) mkdirSync(at, { mode: 0o755 });
      else writeFileSync(at, '', { flag: 'wx', mode: 0o644 });
    }
  }
}
