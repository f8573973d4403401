import { pino, type Logger } from 'pino';

/**
 * Structured logging. Fields that may hold credentials are redacted at the
 * logger so that no call site can leak them by accident.
 */
const REDACT = [
  '*.password', '*.auth', '*.identityToken', '*.identity_token', '*.registryToken', '*.registry_token',
  '*.authorization', '*.Authorization', '*.token', '*.secret', 'auth', 'password', 'headers.authorization',
];

export interface LogOptions {
  /** Replaces pino's default `{ pid, hostname }` fields (`null`: none). */
  base?: Record<string, unknown> | null;
}

function makeRoot(level: string, destination?: NodeJS.WritableStream, options: LogOptions = {}): Logger {
  const base = 'base' in options ? { base: options.base } : {};
  return pino({ level, redact: { paths: REDACT, censor: '[redacted]' }, ...base }, destination as never);
}

let root: Logger = makeRoot(process.env.PODVISOR_LOG_LEVEL ?? 'info');
let generation = 0;
// pino registers each root's stream for a flush at exit in a FinalizationRegistry;
// a root collected while the agent's V8 startup snapshot is built makes the
// snapshot fail, so replaced roots are kept (there are one or two).
const replaced: Logger[] = [];

/** Sets the level and destination for every logger, including those modules made at import time. */
export function configureLogging(level: string, destination?: NodeJS.WritableStream, options: LogOptions = {}): void {
  replaced.push(root);
  root = makeRoot(level, destination, options);
  generation++;
}

/**
 * A logger for one module, e.g. `const log = logger('vm')` at the top of a file.
 * Modules create theirs when imported, before the daemon has read its flags,
 * so each one follows the current root rather than the one that existed then.
 */
export function logger(component: string, bindings: Record<string, unknown> = {}): Logger {
  let child: Logger | undefined;
  let madeIn = -1;
  const current = (): Logger => {
    if (madeIn !== generation) {
      child = root.child({ component, ...bindings });
      madeIn = generation;
    }
    return child!;
  };
  return new Proxy({} as Logger, {
    get(_target, prop) {
      const target = current();
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

export type { Logger };
