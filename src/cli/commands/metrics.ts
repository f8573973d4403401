import { parseCommandArgs, EXIT, type CliCommand } from '../cli-context.js';

const USAGE = `Usage: podvisor metrics

Prints podvisord's Prometheus metrics (text exposition format), read through the admin socket, so
it works whether or not [metrics] listen is set.
`;

export const metrics: CliCommand = {
  summary: "podvisord's Prometheus metrics (text format)",
  usage: USAGE,
  async run(ctx) {
    if (!parseCommandArgs(ctx, USAGE, {}, { min: 0, max: 0 })) return EXIT.ok;
    process.stdout.write(await ctx.admin().text('/v1/metrics'));
    return EXIT.ok;
  },
};
