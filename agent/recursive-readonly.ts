/**
 * Recursive read-only mounts (CRI Mount.recursive_read_only, OCI option "rro").
 * A plain read-only bind leaves the mounts below it writable; "rro" makes every
 * one of them read-only too. The guest's crun (1.8) does not know "rro", so the
 * agent turns it into "ro" plus a createContainer hook: crun runs it in the
 * container's mount namespace after the mounts are made and before pivot_root,
 * and it remounts read-only every mount at or below each such destination.
 * A hook that fails fails the container's start (fail closed).
 */

interface Mount { destination: string; options?: string[] }
interface Hook { path: string; args?: string[] }
interface Spec { root?: { path?: string }; mounts?: Mount[]; hooks?: { createContainer?: Hook[] } & Record<string, unknown> }

// $1: the rootfs path as crun sees it before pivot_root; $2...: the destinations.
// Mount points come from this namespace's mountinfo, outermost first.
const SCRIPT = [
  'root=$1; shift',
  'for dest in "$@"; do',
  '  p="$root$dest"',
  '  awk -v p="$p" \'$5 == p || index($5, p "/") == 1 { print $5 }\' /proc/self/mountinfo | while read -r m; do',
  '    mount -o remount,bind,ro "$m" || exit 1',
  '  done || exit 1',
  'done',
].join('\n');

/** Rewrites "rro" mounts of a spec in place; returns the destinations it made recursive. */
export function applyRecursiveReadOnly(spec: Spec): string[] {
  const dests: string[] = [];
  for (const m of spec.mounts ?? []) {
    if (!m.options?.includes('rro')) continue;
    m.options = [...m.options.filter((o) => o !== 'rro' && o !== 'rw'), ...(m.options.includes('ro') ? [] : ['ro'])];
    if (!m.options.includes('rbind')) m.options.push('rbind'); // submounts must come along to be made read-only
    dests.push(m.destination);
  }
  if (dests.length > 0) {
    const hooks = (spec.hooks ??= {});
    hooks.createContainer = [...(hooks.createContainer ?? []), { path: '/bin/sh', args: ['sh', '-c', SCRIPT, 'podvisor-rro', spec.root?.path ?? '', ...dests] }];
  }
  return dests;
}
