import { pino, type Logger } from 'pino';

/**
 * Structured logging. Fields that may hold credentials are redacted at the
 * logger so that no call site can leak them by accident.
 */
const REDACT = [
  '*.password', '*.auth', '*.identityToken', '*.identity_token', '*.registryToken', '*.registry_token',
  '*.authorization', '*.Authorization', '*.token', '*.secret', 'auth', 'password', 'headers.authorization',
];

let root: Logger = pino({ level: process.env.PODVISOR_LOG_LEVEL ?? 'info', redact: { paths: REDACT, censor: '[redacted]' } });

/** `options.base` replaces pino's default `{ pid, hostname }` fields (`null`: none). */
export function configureLogging(level: string, destination?: NodeJS.WritableStream, options: { base?: Record<string, unknown> | null } = {}): Logger {
  root = pino({ level, redact: { paths: REDACT, censor: '[redacted]' }, ...('base' in options ? { base: options.base } : {}) }, destination as never);
  return root;
}

/** A child logger for one module, e.g. `logger('vm')`. */
export function logger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return root.child({ component, ...bindings });
}

export type { Logger };
