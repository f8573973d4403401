import { spawn } from 'node:child_process';
import { rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { failedPrecondition, internal } from '../errors.js';
import { logger } from '../log.js';
import { syncDirectory, tempName } from '../util/atomic-file.js';

const log = logger('image.erofs');

export const MKFS_EROFS = process.env.PODVISOR_MKFS_EROFS ?? 'mkfs.erofs';

/**
 * Flags for mkfs.erofs. Ownership is kept as unpacked: no `--all-root`, no `--force-uid/--force-gid`
 * (those would squash every file to one owner). `--preserve-mtime` keeps each file's mtime instead
 * of the build time. No compression: the disk is read in the guest on every file access, and an
 * uncompressed erofs needs no decompressor in the guest kernel.
 */
export function mkfsErofsArgs(output: string, tree: string): string[] {
  return ['--quiet', '--preserve-mtime', output, tree];
}

/** Builds a read-only erofs disk from `tree` at `output`, atomically (temp file, then rename). */
export async function buildErofs(tree: string, output: string): Promise<void> {
  const dir = dirname(output);
  const tmp = tempName(dir, 'erofs');
  const started = Date.now();
  try {
    await run(MKFS_EROFS, mkfsErofsArgs(tmp, tree));
    await rename(tmp, output);
    await syncDirectory(dir);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  log.debug({ output, ms: Date.now() - started }, 'erofs disk built');
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { if (stderr.length < 8192) stderr += d.toString(); });
    child.once('error', (e) => {
      reject((e as NodeJS.ErrnoException).code === 'ENOENT'
        ? failedPrecondition(`${cmd} is not installed (Debian package erofs-utils)`, e)
        : internal(`${cmd} could not start: ${e.message}`, e));
    });
    child.once('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(internal(`${cmd} failed (${signal ?? `exit ${code}`}): ${stderr.trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
}
