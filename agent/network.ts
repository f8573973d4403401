import { readdirSync, readFileSync } from 'node:fs';
import { invalidArgument, notFound, PodvisorError, unimplemented } from '../src/errors.js';
import type { ConfigureNetworkRequest } from '../src/agent-protocol/types.js';
import { logger } from '../src/log.js';
import { run, shellQuote } from './run.js';

const log = logger('agent-network');
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const CIDR = /^[0-9a-fA-F.:]+\/\d{1,3}$/;
const IP = /^[0-9a-fA-F.:]+$/;
/** What the set-up script prints, followed by the step's index, when a step fails. */
const FAILED_MARK = '@podvisor-step-failed ';

function interfaceByMac(mac: string): string | undefined {
  for (const name of readdirSync('/sys/class/net')) {
    try {
      if (readFileSync(`/sys/class/net/${name}/address`, 'utf8').trim() === mac) return name;
    } catch {
      // vanished
    }
  }
  return undefined;
}

function check(re: RegExp, what: string, value: string | undefined): string {
  if (!value || !re.test(value)) throw invalidArgument(`${what} ${JSON.stringify(value)} is not valid`);
  return value;
}

/** One command of the set-up (words, or a shell line); a `bestEffort` one may fail without failing the set-up. */
type Step = ({ argv: string[] } | { line: string }) & { what: string; bestEffort?: boolean };

/** The steps for the host's network plan, every value checked first (nothing changes on bad input). */
function plan(req: ConfigureNetworkRequest): Step[] {
  const steps: Step[] = [];
  for (const nic of req.interfaces ?? []) {
    const mac = check(MAC, 'MAC address', nic.mac?.toLowerCase());
    const name = check(IFNAME, 'interface name', nic.name);
    const current = interfaceByMac(mac);
    if (!current) throw notFound(`no guest network interface has MAC ${mac}`);
    steps.push({ argv: ['ip', 'link', 'set', 'dev', current, 'down'], what: `taking ${current} down` });
    if (current !== name) steps.push({ argv: ['ip', 'link', 'set', 'dev', current, 'name', name], what: `renaming ${current} to ${name}` });
    // The MAC QEMU started with is a placeholder: frames to and from the pod carry the CNI interface's.
    if (nic.newMac) steps.push({ argv: ['ip', 'link', 'set', 'dev', name, 'address', check(MAC, 'new MAC address', nic.newMac.toLowerCase())], what: `setting the MAC of ${name}` });
    if (nic.mtu) steps.push({ argv: ['ip', 'link', 'set', 'dev', name, 'mtu', String(nic.mtu)], what: `setting the MTU of ${name}` });
    steps.push({ argv: ['ip', 'addr', 'flush', 'dev', name], what: `flushing addresses of ${name}` });
    if (nic.addresses?.some((a) => a.cidr.includes(':'))) {
      // The CNI IPAM already owns these addresses: skip duplicate address detection, which would hold
      // them "tentative" (unusable) for a second or more after the NIC comes up.
      steps.push({ line: `echo 0 > ${shellQuote(`/proc/sys/net/ipv6/conf/${name}/accept_dad`)}`, what: `turning off DAD on ${name}`, bestEffort: true });
    }
    for (const addr of nic.addresses ?? []) {
      steps.push({ argv: ['ip', 'addr', 'add', check(CIDR, 'address', addr.cidr), 'dev', name], what: `adding ${addr.cidr} to ${name}` });
    }
    steps.push({ argv: ['ip', 'link', 'set', 'dev', name, 'up'], what: `bringing ${name} up` });
  }
  for (const route of req.routes ?? []) {
    const dst = route.destination === 'default' ? 'default' : check(CIDR, 'route destination', route.destination);
    const argv = ['ip', ...(dst.includes(':') || route.gateway?.includes(':') ? ['-6'] : []), 'route', 'replace', dst];
    if (route.gateway) argv.push('via', check(IP, 'gateway', route.gateway));
    if (route.device) argv.push('dev', check(IFNAME, 'route device', route.device));
    if (route.source) argv.push('src', check(IP, 'route source', route.source));
    if (route.metric) argv.push('metric', String(route.metric));
    steps.push({ argv, what: `adding route ${route.destination}` });
  }
  for (const n of req.neighbors ?? []) {
    const addr = check(IP, 'neighbour IP', n.ip);
    // busybox ip cannot change neighbours; its arp can (IPv4 only), as permanent entries.
    if (addr.includes(':')) throw unimplemented(`static IPv6 neighbour ${addr}: the guest's busybox has no tool for it`);
    steps.push({ argv: ['arp', '-i', check(IFNAME, 'neighbour device', n.device), '-s', addr, check(MAC, 'neighbour MAC', n.mac?.toLowerCase())], what: `adding neighbour ${addr}` });
  }
  return steps;
}

/**
 * Guest NICs from the host's network plan: name, MTU, addresses, routes (busybox ip), ARP entries
 * (busybox arp). All steps run in one busybox shell: each process the agent itself starts forks the
 * whole Node process, which under TCG took 0.2–1.2 s per `ip` (3.7 s for a NIC), while the shell's
 * forks are small. The first failing step ends the script; its error names the step.
 */
export async function configureNetwork(req: ConfigureNetworkRequest): Promise<void> {
  const steps = plan(req);
  if (steps.length === 0) return;
  const started = Date.now();
  const script = steps.map((s, i) => {
    const cmd = 'line' in s ? s.line : s.argv.map(shellQuote).join(' ');
    return s.bestEffort ? `${cmd} >/dev/null 2>&1` : `${cmd} 2>&1 || { echo '${FAILED_MARK}${i}'; exit 0; }`;
  }).join('\n');
  const { stdout } = await run('sh', ['-c', script], { what: 'configuring the network', code: 'INVALID_ARGUMENT' });
  const failed = stdout.lastIndexOf(FAILED_MARK);
  if (failed >= 0) {
    const step = steps[Number(stdout.slice(failed + FAILED_MARK.length).trim())];
    const why = stdout.slice(0, failed).trim().split('\n').at(-1) || 'failed';
    throw new PodvisorError('INVALID_ARGUMENT', `${step?.what ?? 'configuring the network'}: ${why}`);
  }
  for (const nic of req.interfaces ?? []) {
    log.info({ mac: nic.newMac || nic.mac, name: nic.name, mtu: nic.mtu, addresses: nic.addresses?.map((a) => a.cidr) }, 'configured interface');
  }
  log.info({ steps: steps.length, ms: Date.now() - started }, 'network configured');
}
