import { randomBytes } from 'node:crypto';
import { invalidArgument, notFound } from '../errors.js';

/** A new sandbox or container id: 64 lowercase hex digits, as containerd makes them. */
export function newId(): string {
  return randomBytes(32).toString('hex');
}

const HEX = /^[0-9a-f]+$/;

/**
 * Finds the one id among `ids` that equals `query` or starts with it (containerd's
 * truncindex rules: a full id always wins, an ambiguous prefix is an error).
 * Returns undefined when nothing matches so callers choose between NotFound and "empty".
 */
export function resolveIdPrefix(query: string, ids: Iterable<string>, kind: string): string | undefined {
  if (query === '') throw invalidArgument(`${kind} id is empty`);
  if (!HEX.test(query)) return undefined;
  const all = [...ids];
  if (all.includes(query)) return query;
  let found: string | undefined;
  for (const id of all) {
    if (id.startsWith(query)) {
      if (found !== undefined) {
        throw invalidArgument(`${kind} id prefix "${query}" is ambiguous: it matches more than one ${kind}; give more digits`);
      }
      found = id;
    }
  }
  return found;
}

export function requireId(query: string, ids: Iterable<string>, kind: string): string {
  const id = resolveIdPrefix(query, ids, kind);
  if (id === undefined) throw notFound(`${kind} "${query}" not found`);
  return id;
}
