import type { SandboxRow } from '../../admin/sandbox-views.js';
import { parseCommandArgs, EXIT, type CliCommand } from '../cli-context.js';
import { duration, printJson, printTable } from '../output.js';

const USAGE = `Usage: podvisor ps [--json] [--all]

Sandboxes on this node: id, pod, state, QEMU pid, accelerator, vCPUs, memory, uptime, and whether
the VM was cold-booted or restored from a template. Without --all only READY sandboxes are shown.
`;

export const ps: CliCommand = {
  summary: 'sandboxes with their VMs (pid, accel, vCPUs, memory, uptime)',
  usage: USAGE,
  async run(ctx) {
    const args = parseCommandArgs(ctx, USAGE, { json: { type: 'boolean' }, all: { type: 'boolean' } }, { min: 0, max: 0 });
    if (!args) return EXIT.ok;
    let rows = await ctx.admin().json<SandboxRow[]>('/v1/sandboxes');
    if (!args.values.all) rows = rows.filter((r) => r.state === 'ready');
    if (args.values.json) {
      printJson(rows);
      return EXIT.ok;
    }
    printTable(rows, [
      ['SANDBOX', (r) => r.id.slice(0, 12)],
      ['POD', (r) => r.pod],
      ['STATE', (r) => r.state],
      ['PID', (r) => r.qemuPid],
      ['ACCEL', (r) => r.accel],
      ['VCPUS', (r) => r.vcpus],
      ['MEMORY', (r) => (r.memoryMiB === null ? null : `${r.memoryMiB}Mi`)],
      ['UPTIME', (r) => duration(r.uptimeSeconds)],
      ['BOOT', (r) => r.boot],
      ['CONTAINERS', (r) => r.containers],
    ]);
    return EXIT.ok;
  },
};
