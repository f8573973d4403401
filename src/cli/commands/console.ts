import { parseCommandArgs, EXIT, type CliCommand } from '../cli-context.js';
import { runSession, terminalSize } from '../session-client.js';

const USAGE = `Usage: podvisor console SANDBOX

An interactive shell in the sandbox VM itself (the guest's root namespaces, not a container):
the guest's mounts, processes, crun state and logs. Raw terminal, window size follows yours; exit
the shell (or Ctrl-D) to leave. Only when podvisord's config has [debug] enabled = true; every
session is logged by podvisord. SANDBOX is an id prefix, namespace/name, or a pod name.
Exit status: the shell's.
`;

export const consoleCommand: CliCommand = {
  summary: "a shell in a sandbox VM's guest (debug only; logged)",
  usage: USAGE,
  async run(ctx) {
    const args = parseCommandArgs(ctx, USAGE, {}, { min: 1, max: 1 });
    if (!args) return EXIT.ok;
    const q = new URLSearchParams({ term: process.env.TERM || 'xterm' });
    const { rows, cols } = terminalSize();
    if (rows && cols) q.set('rows', String(rows)), q.set('cols', String(cols));
    const socket = await ctx.admin().session(`/v1/sandboxes/${encodeURIComponent(args.positionals[0]!)}/console?${q}`);
    return runSession(socket, { tty: true, stdin: true });
  },
};
