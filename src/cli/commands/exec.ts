import { parseCommandArgs, usageError, EXIT, type CliCommand, type CliContext } from '../cli-context.js';
import { runSession, terminalSize } from '../session-client.js';

const USAGE = `Usage: podvisor exec [-c NAME] [-i] [-t] SANDBOX|CONTAINER -- COMMAND [ARG...]

Runs COMMAND in a running container, through podvisord's admin socket. CONTAINER is a container id
prefix; SANDBOX (id prefix, namespace/name or pod name) picks its one running container, or the
one named with -c. -i passes stdin, -t allocates a terminal (raw mode, resize). Exit status: the
command's.
`;

/** Runs argv in a container with this process's stdio; the shared path for exec and cp. */
export async function execIn(
  ctx: CliContext,
  target: string,
  container: string | undefined,
  argv: string[],
  opts: { tty: boolean; stdin: boolean },
) {
  const q = new URLSearchParams({ target, argv: JSON.stringify(argv), tty: opts.tty ? '1' : '0', stdin: opts.stdin ? '1' : '0' });
  if (container) q.set('container', container);
  if (opts.tty) {
    const { rows, cols } = terminalSize();
    if (rows && cols) q.set('rows', String(rows)), q.set('cols', String(cols));
  }
  return ctx.admin().session(`/v1/exec?${q}`);
}

export const exec: CliCommand = {
  summary: 'run a command in a container (-i stdin, -t terminal)',
  usage: USAGE,
  async run(ctx) {
    const dash = ctx.args.indexOf('--');
    if (dash < 0 && !ctx.args.includes('-h') && !ctx.args.includes('--help')) throw usageError('put -- before the command', USAGE);
    const before = { ...ctx, args: dash < 0 ? ctx.args : ctx.args.slice(0, dash) };
    const args = parseCommandArgs(before, USAGE, {
      container: { type: 'string', short: 'c' },
      stdin: { type: 'boolean', short: 'i' },
      tty: { type: 'boolean', short: 't' },
    }, { min: 1, max: 1 });
    if (!args) return EXIT.ok;
    const argv = ctx.args.slice(dash + 1);
    if (argv.length === 0) throw usageError('no command after --', USAGE);
    const opts = { tty: !!args.values.tty, stdin: !!args.values.stdin };
    const socket = await execIn(ctx, args.positionals[0]!, args.values.container as string | undefined, argv, opts);
    return runSession(socket, opts);
  },
};
