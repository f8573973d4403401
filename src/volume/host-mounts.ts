import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { failedPrecondition } from '../errors.js';

/**
 * Host mount operations for volume sharing, through util-linux `mount`/`umount`
 * (Node has no mount(2)). Every call has a deadline: a hung NFS hostPath must
 * not hang podvisord.
 */

const MOUNT_TIMEOUT_MS = 15_000;

function tool(bin: 'mount' | 'umount', args: string[], what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { timeout: MOUNT_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const detail = String(stderr).trim() || err.message;
      reject(failedPrecondition(`${what}: ${bin} ${args.join(' ')}: ${detail}`));
    });
  });
}

/** Quotes one word for sh: single quotes, with ' written as '\''. */
function shellWord(w: string): string {
  return `'${w.replace(/'/g, `'\\''`)}'`;
}

/**
 * Runs many mount/umount commands in one `sh -e` (stops at the first failure,
 * whose own message says what failed). Each command is still one mount(8), but
 * podvisord forks once: under load a fork of the daemon costs far more than
 * mount itself (bench/volume-binds.ts).
 */
export function mountBatch(commands: Array<['mount' | 'umount', ...string[]]>, what: string): Promise<void> {
  if (commands.length === 0) return Promise.resolve();
  const script = commands.map((c) => c.map(shellWord).join(' ')).join('\n');
  return new Promise((resolve, reject) => {
    execFile('sh', ['-ec', script], { timeout: MOUNT_TIMEOUT_MS + 2_000 * commands.length, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      reject(failedPrecondition(`${what}: ${String(stderr).trim() || err.message}`));
    });
  });
}

export function mount(args: string[], what: string): Promise<void> {
  return tool('mount', args, what);
}

export function umount(args: string[], what: string): Promise<void> {
  return tool('umount', args, what);
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export interface MountEntry {
  point: string;
  /** Per-mount options (mountinfo field 6). */
  options: string[];
}

/** This process's mount table, in mountinfo order (a later entry on the same point is on top). */
export function mountTable(): MountEntry[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const f = line.split(' ');
      return { point: unescape(f[4] ?? ''), options: (f[5] ?? '').split(',') };
    });
}

/** Mount points of this process's mount namespace at or below `dir`, deepest first (the order to unmount them). */
export function mountsUnder(dir: string, table = mountTable()): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const points = table.map((m) => m.point).filter((p) => p === dir || p.startsWith(prefix));
  return points.sort((a, b) => b.length - a.length);
}

/** The topmost mount that holds `path` (the one a bind of `path` copies its flags from). */
export function mountHolding(path: string, table = mountTable()): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const m of table) {
    const prefix = m.point.endsWith('/') ? m.point : `${m.point}/`;
    if (path !== m.point && !path.startsWith(prefix)) continue;
    if (!best || m.point.length >= best.point.length) best = m;
  }
  return best;
}

export function isMountPoint(path: string): boolean {
  return mountsUnder(path).includes(path);
}
