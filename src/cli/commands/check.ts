import { existsSync } from 'node:fs';
import { configureLogging } from '../../log.js';
import { loadConfig } from '../../config/config.js';
import { unary } from '../../cri/client.js';
import { bootProbe, socketCheck, staticChecks, type CheckResult } from '../host-checks.js';
import { parseCommandArgs, EXIT, type CliCommand } from '../cli-context.js';
import { printJson, progress } from '../output.js';

const USAGE = `Usage: podvisor check [--config FILE] [--no-boot] [--json]

Host readiness, one line per item (ok, warn, fail): privileges, QEMU and its devices, the
accelerator (KVM or TCG), vhost-vsock, the guest image, mkfs.erofs, cgroup v2, CNI plugins and
config, virtiofsd, directory permissions, the CRI socket, and a boot probe that starts a real VM
and waits for its agent (skip it with --no-boot). Exit status 1 when any item fails: the node
cannot run pods. --config defaults to /etc/podvisor/config.toml when it exists.
`;

export const check: CliCommand = {
  summary: 'host readiness, one line per item; exit 1 when the node cannot run pods',
  usage: USAGE,
  async run(ctx) {
    const args = parseCommandArgs(ctx, USAGE, { config: { type: 'string' }, 'no-boot': { type: 'boolean' }, json: { type: 'boolean' } }, { min: 0, max: 0 });
    if (!args) return EXIT.ok;
    const v = args.values as { config?: string; 'no-boot'?: boolean; json?: boolean };
    // --json is for scripts: what the probes log (the TCG warning, say) is in the report already.
    if (v.json && !process.env.PODVISOR_LOG_LEVEL) configureLogging('error', process.stderr);
    const file = v.config ?? (existsSync('/etc/podvisor/config.toml') ? '/etc/podvisor/config.toml' : undefined);
    const config = loadConfig(file, { listen: ctx.criSocket });
    const shown = progress(!v.json);
    shown.step('checking the host…');
    const results: CheckResult[] = await staticChecks(config);
    shown.step('asking podvisord…');
    results.push(await socketCheck(config, async () => {
      const r = await unary(ctx.cri().runtime, 'Version', {});
      return `${r.runtime_name} ${r.runtime_version}`;
    }));
    if (!v['no-boot']) results.push(await bootProbe(config, (text) => shown.step(text)));
    shown.done();
    const failed = results.filter((r) => r.status === 'fail');
    if (v.json) printJson({ ready: failed.length === 0, config: file ?? null, results });
    else {
      const width = Math.max(...results.map((r) => r.item.length));
      for (const r of results) process.stdout.write(`${r.status.padEnd(4)}  ${r.item.padEnd(width)}  ${r.detail}\n`);
      process.stdout.write(failed.length === 0
        ? `\nready: this node can run pods${results.some((r) => r.status === 'warn') ? ' (see the warnings)' : ''}\n`
        : `\nNOT READY: ${failed.map((r) => r.item).join(', ')} failed\n`);
    }
    return failed.length === 0 ? EXIT.ok : EXIT.failed;
  },
};
