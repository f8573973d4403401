import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { CriClient } from '../cri/client.js';
import type { AdminClient } from './admin-client.js';
import { CliError, EXIT } from './cli-errors.js';

export { CliError, EXIT };

export const usageError = (message: string, usage: string) => new CliError(EXIT.usage, `${message}\n\n${usage}`);

/** What every command gets: its arguments and lazily made clients for the daemon's sockets. */
export interface CliContext {
  args: string[];
  criSocket: string;
  adminSocket: string;
  cri(): CriClient;
  admin(): AdminClient;
  /** Whether stdout is a terminal (progress and colours only then). */
  interactive: boolean;
}

export interface CliCommand {
  summary: string;
  usage: string;
  /** Returns the exit code. */
  run(ctx: CliContext): Promise<number>;
}

/** parseArgs with --help and usage errors handled the same way for every command. */
export function parseCommandArgs<O extends NonNullable<ParseArgsConfig['options']>>(
  ctx: CliContext,
  usage: string,
  options: O,
  positionals: { min: number; max: number },
): { values: ReturnType<typeof parseArgs<{ options: O & { help: { type: 'boolean'; short: 'h' } }; allowPositionals: true; strict: true }>>['values']; positionals: string[] } | undefined {
  let parsed;
  try {
    parsed = parseArgs({ args: ctx.args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw usageError((e as Error).message, usage);
  }
  if ((parsed.values as { help?: boolean }).help) {
    process.stdout.write(usage);
    return undefined;
  }
  if (parsed.positionals.length < positionals.min) throw usageError('missing arguments', usage);
  if (parsed.positionals.length > positionals.max) throw usageError(`unexpected argument "${parsed.positionals[positionals.max]}"`, usage);
  return parsed as never;
}
