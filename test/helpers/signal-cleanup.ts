import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Cleanups that must also run when a test process is interrupted (Ctrl-C, CI's timeout sends
 * SIGTERM): `after` hooks do not run then, and a killed test file would leave registries, VMs,
 * bridges and temp folders behind. Every fixture registers its own cleanup here; one signal
 * handler runs them all, newest first (a daemon before the registry it pulls from), each
 * bounded so one stuck cleanup cannot keep the others from running, then exits.
 */
type Cleanup = () => unknown;

const cleanups = new Set<Cleanup>();
const PER_CLEANUP_MS = 15_000;
let handling = false;

async function runAllAndExit(signal: NodeJS.Signals): Promise<void> {
  if (handling) return;
  handling = true;
  for (const fn of [...cleanups].reverse()) {
    if (!cleanups.delete(fn)) continue; // an earlier cleanup already did this one

    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.resolve().then(fn).catch(() => undefined),
      new Promise((r) => (timer = setTimeout(r, PER_CLEANUP_MS))),
    ]);
    clearTimeout(timer);
  }
  process.exit(signal === 'SIGINT' ? 130 : 143);
}

let installed = false;

/** Registers `fn` to run if the process is interrupted; the returned function unregisters it. */
export function cleanupOnSignal(fn: Cleanup): () => void {
  if (!installed) {
    process.on('SIGINT', () => void runAllAndExit('SIGINT'));
    process.on('SIGTERM', () => void runAllAndExit('SIGTERM'));
    installed = true;
  }
  cleanups.add(fn);
  return () => void cleanups.delete(fn);
}

/** A fresh temp folder that is removed if the process is interrupted (after hooks remove it otherwise). */
export function tempDirRemovedOnSignal(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanupOnSignal(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
