import { isAbsolute, normalize } from 'node:path';
import { invalidArgument } from '../src/errors.js';

/** Container and exec ids become file names and crun ids: keep them plain. */
export function checkId(kind: string, id: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(id)) {
    throw invalidArgument(`${kind} ${JSON.stringify(id)} must be 1-128 characters of letters, digits, '_', '.', '-' (not starting with a symbol)`);
  }
  return id;
}

/** A guest path the host names: absolute and already normal (no '..', no '//', no trailing '/', not '/'). */
export function checkGuestPath(what: string, path: string): string {
  if (!path || !isAbsolute(path) || normalize(path) !== path || path.includes('\0') || path.endsWith('/')) {
    throw invalidArgument(`${what} must be a normalised absolute guest path other than /, got ${JSON.stringify(path)}`);
  }
  return path;
}
