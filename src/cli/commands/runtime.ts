import { unary } from '../../cri/client.js';
import { parseCommandArgs, EXIT, type CliCommand } from '../cli-context.js';
import { printJson } from '../output.js';

const VERSION_USAGE = 'Usage: podvisor version [--json]\n\nThe runtime name and versions podvisord reports over the CRI.\n';
const STATUS_USAGE = 'Usage: podvisor status [--json]\n\nRuntimeReady / NetworkReady with their reasons, and the runtime handlers, over the CRI.\nExit status 1 when the runtime is not ready.\n';

export const version: CliCommand = {
  summary: 'runtime name and versions',
  usage: VERSION_USAGE,
  async run(ctx) {
    const args = parseCommandArgs(ctx, VERSION_USAGE, { json: { type: 'boolean' } }, { min: 0, max: 0 });
    if (!args) return EXIT.ok;
    const v = await unary(ctx.cri().runtime, 'Version', {});
    if (args.values.json) printJson(v);
    else console.log(`${v.runtime_name} ${v.runtime_version} (CRI ${v.runtime_api_version})`);
    return EXIT.ok;
  },
};

export const status: CliCommand = {
  summary: 'runtime conditions and handlers',
  usage: STATUS_USAGE,
  async run(ctx) {
    const args = parseCommandArgs(ctx, STATUS_USAGE, { json: { type: 'boolean' } }, { min: 0, max: 0 });
    if (!args) return EXIT.ok;
    const s = await unary(ctx.cri().runtime, 'Status', { verbose: true });
    const conditions = s.status?.conditions ?? [];
    const accel = s.info.accelerator ? (JSON.parse(s.info.accelerator) as { accel?: string; reason?: string; probing?: boolean }) : undefined;
    if (args.values.json) printJson({ conditions, handlers: s.runtime_handlers.map((h) => h.name), ...(accel ? { accelerator: accel } : {}) });
    else {
      for (const c of conditions) console.log(`${c.type.padEnd(13)} ${c.status ? 'true ' : 'false'} ${c.reason}${c.message ? `: ${c.message}` : ''}`);
      console.log(`handlers      ${s.runtime_handlers.map((h) => JSON.stringify(h.name)).join(', ')}`);
      if (accel) console.log(`accelerator   ${accel.probing ? 'probing' : accel.accel}: ${accel.reason}`);
    }
    return conditions.some((c) => c.type === 'RuntimeReady' && !c.status) ? EXIT.failed : EXIT.ok;
  },
};
