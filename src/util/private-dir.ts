import { chmodSync, lstatSync, mkdirSync } from 'node:fs';
import { failedPrecondition } from '../errors.js';

/**
 * Creates a directory only root may enter, and makes an existing one so (L7):
 * `mkdir` sets the mode only when it creates. A directory that is a symlink or
 * owned by someone else is refused rather than trusted.
 */
export function privateDir(path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  const st = lstatSync(path);
  if (!st.isDirectory()) throw failedPrecondition(`${path} is not a directory (a symlink?); refusing to keep state there`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) throw failedPrecondition(`${path} is owned by uid ${st.uid}, not podvisord's uid ${uid}; refusing to keep state there`);
  if ((st.mode & 0o777) !== 0o700) chmodSync(path, 0o700);
}
