import { parseCommandArgs, EXIT, type CliCommand } from '../cli-context.js';
import { printJson } from '../output.js';

const USAGE = `Usage: podvisor inspect [--json] SANDBOX

Everything about one sandbox: its config, the VM (QEMU command line, QMP status, CPU and memory
figures from /proc, hot-plugged disks, run directory files), the agent's health, network, images,
volumes and containers. SANDBOX is an id prefix, namespace/name, or a pod name.
`;

interface Inspected {
  id: string;
  pod: string;
  state: string;
  handler: string;
  notReadyReason: string | null;
  createdAt: string;
  vm: {
    running: boolean;
    pid?: number;
    accelerator?: string;
    vcpus?: number;
    memoryMiB?: number;
    commandLine?: string[] | null;
    qmpStatus?: { status?: string; running?: boolean; error?: string };
    usage?: { rssBytes: number; pssBytes: number; vcpuSeconds: number | null; cpuSeconds: number; threads: number } | null;
    disks?: Array<{ id: string; serial: string; scsiId: number }>;
    files?: Record<string, string>;
  };
  agent: { connected: boolean; healthy?: boolean; roundTripMs?: number; agentPid?: number; starts?: number; guestUptimeSeconds?: number; error?: string };
  network: { mode: string; ips: string[] };
  images: Array<{ imageId: string; serial: string; guestMountPoint: string }>;
  volumes: Array<{ container: string; containerPath: string; hostPath: string; readonly: boolean }>;
  volumeWriteBackRefusals: { total: number; recent: Array<{ volume?: string; code: string; message: string; count: number; last: string }> } | null;
  containers: Array<{ id: string; name: string; state: string; image: string; guestPid: number | null; exitCode: number | null }>;
}

const MiB = 1024 * 1024;

export const inspect: CliCommand = {
  summary: 'one sandbox in depth: config, VM command line, QMP status, CPU/memory, agent, disks',
  usage: USAGE,
  async run(ctx) {
    const args = parseCommandArgs(ctx, USAGE, { json: { type: 'boolean' } }, { min: 1, max: 1 });
    if (!args) return EXIT.ok;
    const s = await ctx.admin().json<Inspected>(`/v1/sandboxes/${encodeURIComponent(args.positionals[0]!)}`);
    if (args.values.json) {
      printJson(s);
      return EXIT.ok;
    }
    const out: string[] = [];
    const kv = (k: string, v: unknown) => out.push(`${`${k}:`.padEnd(16)}${v === undefined || v === null || v === '' ? '-' : v}`);
    kv('Sandbox', s.id);
    kv('Pod', s.pod);
    kv('State', s.state + (s.notReadyReason ? ` (${s.notReadyReason})` : ''));
    kv('Handler', JSON.stringify(s.handler));
    kv('Created', s.createdAt);
    out.push('VM:');
    kv('  running', s.vm.running);
    kv('  QEMU pid', s.vm.pid);
    kv('  accelerator', s.vm.accelerator);
    kv('  vCPUs', s.vm.vcpus);
    kv('  memory', s.vm.memoryMiB !== undefined ? `${s.vm.memoryMiB} MiB` : undefined);
    kv('  QMP status', s.vm.qmpStatus ? (s.vm.qmpStatus.error ?? s.vm.qmpStatus.status) : undefined);
    if (s.vm.usage) {
      kv('  RSS', `${(s.vm.usage.rssBytes / MiB).toFixed(1)} MiB`);
      kv('  PSS', `${(s.vm.usage.pssBytes / MiB).toFixed(1)} MiB`);
      kv('  vCPU time', `${s.vm.usage.vcpuSeconds === null ? 'unknown (QEMU started without debug-threads)' : `${s.vm.usage.vcpuSeconds.toFixed(2)} s`} (QEMU total ${s.vm.usage.cpuSeconds.toFixed(2)} s, ${s.vm.usage.threads} threads)`);
    }
    for (const d of s.vm.disks ?? []) kv('  disk', `${d.id} serial=${d.serial} scsi-id=${d.scsiId}`);
    for (const [k, v] of Object.entries(s.vm.files ?? {})) kv(`  ${k}`, v);
    if (s.vm.commandLine) kv('  command', s.vm.commandLine.join(' '));
    out.push('Agent:');
    kv('  connected', s.agent.connected);
    if (s.agent.connected) {
      kv('  healthy', s.agent.healthy + (s.agent.error ? ` (${s.agent.error})` : ''));
      kv('  round trip', s.agent.roundTripMs !== undefined ? `${s.agent.roundTripMs} ms` : undefined);
      kv('  agent pid', s.agent.agentPid);
      kv('  starts', s.agent.starts);
      kv('  guest uptime', s.agent.guestUptimeSeconds !== undefined ? `${s.agent.guestUptimeSeconds.toFixed(1)} s` : undefined);
    }
    kv('Network', `${s.network.mode}${s.network.ips.length ? ` ${s.network.ips.join(', ')}` : ''}`);
    for (const i of s.images) kv('Image', `${i.imageId.slice(0, 19)} at ${i.guestMountPoint}`);
    if (s.volumes.length === 0) kv('Volumes', 'none');
    for (const v of s.volumes) kv('Volume', `${v.container}: ${v.hostPath} -> ${v.containerPath}${v.readonly ? ' (ro)' : ''}`);
    if (s.volumeWriteBackRefusals) {
      const w = s.volumeWriteBackRefusals;
      kv('Write-back', w.total === 0 ? 'nothing refused' : `${w.total} guest answers refused or unanswered; the last ${w.recent.length}:`);
      for (const r of w.recent) kv('  refused', `${r.last} ${r.code}${r.count > 1 ? ` (x${r.count})` : ''} ${r.volume ?? '(long poll)'}: ${r.message}`);
    }
    for (const c of s.containers) kv('Container', `${c.id.slice(0, 12)} ${c.name} ${c.state}${c.exitCode !== null ? ` exit=${c.exitCode}` : ''} ${c.image}`);
    process.stdout.write(out.join('\n') + '\n');
    return EXIT.ok;
  },
};
