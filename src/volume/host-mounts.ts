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

/** Mount points of this process's mount namespace at or below `dir`, deepest first (the order to unmount them). */
export function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => unescape(line.split(' ')[4] ?? ''))
    .filter((p) => p === dir || p.startsWith(prefix));
  return points.sort((a, b) => b.length - a.length);
}

export function isMountPoint(path: string): boolean {
  return mountsUnder(path).includes(path);
}
