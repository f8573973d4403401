import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { mustRun, runCommand } from './host-command.js';

/**
 * Network namespaces that outlive any process: the namespace is bind-mounted
 * onto a file (as `ip netns add` does under /run/netns), so it stays while the
 * pod's QEMU restarts, while podvisord is down, and until RemovePodSandbox.
 */

/** Whether `path` is a live namespace mount (not just the empty file under it). */
export function isNetnsMounted(path: string): boolean {
  return existsSync(path) && mounts().some((m) => m.point === path && m.fsType === 'nsfs');
}

/** This process's mounts from mountinfo: mount point (field 5), propagation (optional fields), fs type (after '-'). */
function mounts(): Array<{ point: string; fsType: string; shared: boolean }> {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).map((l) => {
    const f = l.split(' ');
    const sep = f.indexOf('-');
    return { point: unescapeMount(f[4] ?? ''), fsType: f[sep + 1] ?? '', shared: f.slice(6, sep).some((o) => o.startsWith('shared:')) };
  });
}

/**
 * The folder that holds namespace files must not propagate mounts: under a
 * shared mount, a bind mount of an nsfs file would also appear (and pin the
 * namespace) in peer mount namespaces. Then, as `ip netns` does for
 * /run/netns, the folder becomes a private bind mount of itself.
 */
async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const holder = mounts().filter((m) => dir === m.point || dir.startsWith(m.point.endsWith('/') ? m.point : `${m.point}/`))
    .sort((a, b) => b.point.length - a.point.length)[0];
  if (!holder?.shared) return;
  if (holder.point !== dir) await mustRun('mount', ['--bind', dir, dir], `bind-mounting ${dir} onto itself`);
  await mustRun('mount', ['--make-private', dir], `making ${dir} a private mount`);
}

/** mountinfo writes space, tab, newline and backslash as octal escapes. */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Creates the namespace file `path` (idempotent: a live one is kept). */
export async function createNetns(path: string): Promise<void> {
  if (isNetnsMounted(path)) return;
  await ensurePrivateDir(dirname(path));
  await writeFile(path, '', { mode: 0o600 });
  try {
    await mustRun('unshare', [`--net=${path}`, 'true'], `creating network namespace ${path}`);
  } catch (e) {
    await removeNetns(path);
    throw e;
  }
}

/** Unmounts and deletes the namespace file; a missing one is fine. */
export async function removeNetns(path: string): Promise<void> {
  if (isNetnsMounted(path)) {
    const r = await runCommand('umount', [path]);
    // Lazily when busy (a helper still inside): the namespace dies with its last user.
    if (r.code !== 0) await mustRun('umount', ['--lazy', path], `unmounting network namespace ${path}`);
  }
  await rm(path, { force: true });
}

/** Runs a command inside the namespace. */
export function inNetns(path: string, command: string, args: string[], what: string): Promise<string> {
  return mustRun('nsenter', [`--net=${path}`, command, ...args], what);
}
