import { readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { invalidArgument, notFound, unimplemented } from '../src/errors.js';
import type { ConfigureNetworkRequest } from '../src/agent-protocol/types.js';
import { logger } from '../src/log.js';
import { run } from './run.js';

const log = logger('agent-network');
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const CIDR = /^[0-9a-fA-F.:]+\/\d{1,3}$/;
const IP = /^[0-9a-fA-F.:]+$/;

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

const ip = (args: string[], what: string) => run('ip', args, { what, code: 'INVALID_ARGUMENT' });

/** Guest NICs from the host's network plan: name, MTU, addresses, routes (busybox ip), ARP entries (busybox arp). */
export async function configureNetwork(req: ConfigureNetworkRequest): Promise<void> {
  for (const nic of req.interfaces ?? []) {
    const mac = check(MAC, 'MAC address', nic.mac?.toLowerCase());
    const name = check(IFNAME, 'interface name', nic.name);
    const current = interfaceByMac(mac);
    if (!current) throw notFound(`no guest network interface has MAC ${mac}`);
    await ip(['link', 'set', 'dev', current, 'down'], `taking ${current} down`);
    if (current !== name) await ip(['link', 'set', 'dev', current, 'name', name], `renaming ${current} to ${name}`);
    // The MAC QEMU started with is a placeholder: frames to and from the pod carry the CNI interface's.
    if (nic.newMac) await ip(['link', 'set', 'dev', name, 'address', check(MAC, 'new MAC address', nic.newMac.toLowerCase())], `setting the MAC of ${name}`);
    if (nic.mtu) await ip(['link', 'set', 'dev', name, 'mtu', String(nic.mtu)], `setting the MTU of ${name}`);
    await ip(['addr', 'flush', 'dev', name], `flushing addresses of ${name}`);
    if (nic.addresses?.some((a) => a.cidr.includes(':'))) {
      // The CNI IPAM already owns these addresses: skip duplicate address detection, which would hold
      // them "tentative" (unusable) for a second or more after the NIC comes up.
      await writeFile(`/proc/sys/net/ipv6/conf/${name}/accept_dad`, '0').catch(() => undefined);
    }
    for (const addr of nic.addresses ?? []) {
      await ip(['addr', 'add', check(CIDR, 'address', addr.cidr), 'dev', name], `adding ${addr.cidr} to ${name}`);
    }
    await ip(['link', 'set', 'dev', name, 'up'], `bringing ${name} up`);
    log.info({ mac: nic.newMac || mac, name, mtu: nic.mtu, addresses: nic.addresses?.map((a) => a.cidr) }, 'configured interface');
  }
  for (const route of req.routes ?? []) {
    const dst = route.destination === 'default' ? 'default' : check(CIDR, 'route destination', route.destination);
    const args = [...(dst.includes(':') || route.gateway?.includes(':') ? ['-6'] : []), 'route', 'replace', dst];
    if (route.gateway) args.push('via', check(IP, 'gateway', route.gateway));
    if (route.device) args.push('dev', check(IFNAME, 'route device', route.device));
    if (route.source) args.push('src', check(IP, 'route source', route.source));
    if (route.metric) args.push('metric', String(route.metric));
    await ip(args, `adding route ${route.destination}`);
  }
  for (const n of req.neighbors ?? []) {
    const addr = check(IP, 'neighbour IP', n.ip);
    // busybox ip cannot change neighbours; its arp can (IPv4 only), as permanent entries.
    if (addr.includes(':')) throw unimplemented(`static IPv6 neighbour ${addr}: the guest's busybox has no tool for it`);
    await run('arp', ['-i', check(IFNAME, 'neighbour device', n.device), '-s', addr, check(MAC, 'neighbour MAC', n.mac?.toLowerCase())], { what: `adding neighbour ${addr}`, code: 'INVALID_ARGUMENT' });
  }
}
