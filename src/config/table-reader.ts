import { invalidArgument } from '../errors.js';

/**
 * Reads one TOML table with typed accessors and remembers which keys were
 * read, so that `finish()` can refuse any key nobody asked for. A typo in an
 * operator's config must stop the daemon with the key and file named, never
 * be silently ignored.
 */
export class TableReader {
  private readonly seen = new Set<string>();

  constructor(
    private readonly file: string,
    private readonly path: string,
    private readonly data: Record<string, unknown>,
  ) {}

  /** Key path as an operator writes it, e.g. `runtimes.kata.memory_mib`. */
  keyPath(key: string): string {
    const quoted = /^[A-Za-z0-9_-]+$/.test(key) ? key : JSON.stringify(key);
    return this.path ? `${this.path}.${quoted}` : quoted;
  }

  fail(key: string, problem: string): never {
    throw invalidArgument(`config ${this.file}: key "${this.keyPath(key)}" ${problem}`);
  }

  has(key: string): boolean {
    return Object.hasOwn(this.data, key);
  }

  private take(key: string): unknown {
    this.seen.add(key);
    return this.data[key];
  }

  string(key: string, fallback: string, check?: (v: string) => string | undefined): string {
    const v = this.take(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'string') this.fail(key, `must be a string, got ${describe(v)}`);
    const problem = check?.(v);
    if (problem) this.fail(key, problem);
    return v;
  }

  oneOf<T extends string>(key: string, fallback: T, allowed: readonly T[]): T {
    return this.string(key, fallback, (v) =>
      (allowed as readonly string[]).includes(v) ? undefined : `must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got "${v}"`,
    ) as T;
  }

  int(key: string, fallback: number, range: { min?: number; max?: number } = {}): number {
    const v = this.take(key);
    if (v === undefined) return fallback;
    const n = typeof v === 'bigint' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n)) this.fail(key, `must be an integer, got ${describe(v)}`);
    if (range.min !== undefined && n < range.min) this.fail(key, `must be at least ${range.min}, got ${n}`);
    if (range.max !== undefined && n > range.max) this.fail(key, `must be at most ${range.max}, got ${n}`);
    return n;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.take(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') this.fail(key, `must be true or false, got ${describe(v)}`);
    return v;
  }

  strings(key: string, fallback: string[]): string[] {
    const v = this.take(key);
    if (v === undefined) return fallback;
    if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) this.fail(key, `must be an array of strings, got ${describe(v)}`);
    return v as string[];
  }

  /** A sub-table; absent means empty. */
  table(key: string): TableReader {
    const v = this.take(key);
    if (v === undefined) return new TableReader(this.file, this.keyPath(key), {});
    if (!isTable(v)) this.fail(key, `must be a table, got ${describe(v)}`);
    return new TableReader(this.file, this.keyPath(key), v);
  }

  /** Every sub-table of a table whose keys are names chosen by the operator (handlers, registries). */
  namedTables(key: string): Map<string, TableReader> {
    const parent = this.table(key);
    const out = new Map<string, TableReader>();
    for (const name of parent.keys()) out.set(name, parent.table(name));
    parent.finish();
    return out;
  }

  /** The raw value of a key, for sections another module validates. */
  raw(key: string): unknown {
    return this.take(key);
  }

  keys(): string[] {
    return Object.keys(this.data);
  }

  /** Refuses any key that no accessor read. */
  finish(): void {
    for (const key of Object.keys(this.data)) {
      if (!this.seen.has(key)) this.fail(key, 'is not a known setting');
    }
  }
}

export function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date';
  if (typeof v === 'string') return `"${v}"`;
  if (isTable(v)) return 'a table';
  return String(v);
}
