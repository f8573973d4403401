import { parseCommandArgs, usageError, EXIT, type CliCommand } from '../cli-context.js';

const USAGE = `Usage: podvisor logs [--follow] [--source all|console|agent] [--tail-bytes N] SANDBOX

The sandbox VM's guest console (kernel and init on the serial port) and its agent log (the agent's
and the guest kernel's log lines as the agent forwards them). Without --follow it prints the last
--tail-bytes (default 1 MiB) of each and exits; with --follow it keeps printing until interrupted.
`;

export const logs: CliCommand = {
  summary: "a sandbox VM's guest console and agent log (--follow)",
  usage: USAGE,
  async run(ctx) {
    const args = parseCommandArgs(ctx, USAGE, {
      follow: { type: 'boolean', short: 'f' },
      source: { type: 'string' },
      'tail-bytes': { type: 'string' },
    }, { min: 1, max: 1 });
    if (!args) return EXIT.ok;
    const tail = args.values['tail-bytes'] ?? String(1024 * 1024);
    if (!/^\d+$/.test(String(tail))) throw usageError('--tail-bytes must be a number of bytes', USAGE);
    const query = new URLSearchParams({ source: String(args.values.source ?? 'all'), tail_bytes: String(tail), follow: args.values.follow ? '1' : '0' });
    const res = await ctx.admin().get(`/v1/sandboxes/${encodeURIComponent(args.positionals[0]!)}/logs?${query}`);
    await new Promise<void>((resolve, reject) => {
      res.on('data', (d: Buffer) => process.stdout.write(d));
      res.on('end', resolve);
      res.on('error', reject);
    });
    return EXIT.ok;
  },
};
