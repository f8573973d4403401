import { failedPrecondition } from '../errors.js';

/**
 * The parts of a CNI result (spec 0.3.0 … 1.1.0: same shape) the pod needs:
 * its addresses (IPv4 first: kubelet takes the first as the pod IP), routes,
 * and the sandbox interface whose MAC the guest NIC takes over.
 */

export interface PodAddress {
  /** Address with prefix, e.g. 10.88.0.5/16 or fd00:88::5/64. */
  cidr: string;
  /** Address only. */
  ip: string;
  gateway?: string;
  family: 4 | 6;
}

export interface PodRoute {
  destination: string;
  gateway?: string;
}

export interface PodAttachment {
  mac: string;
  addresses: PodAddress[];
  routes: PodRoute[];
}

interface RawResult {
  interfaces?: Array<{ name?: string; mac?: string; sandbox?: string }>;
  ips?: Array<{ address?: string; gateway?: string; interface?: number }>;
  routes?: Array<{ dst?: string; gw?: string }>;
}

export function parseCniResult(raw: unknown, ifName: string, netns: string): PodAttachment {
  const r = (raw ?? {}) as RawResult;
  const ifaces = r.interfaces ?? [];
  const index = ifaces.findIndex((i) => i.name === ifName && (i.sandbox === netns || i.sandbox === undefined || i.sandbox === ''));
  const iface = ifaces[index];
  const mac = iface?.mac?.toLowerCase();
  if (!mac || !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac)) {
    throw failedPrecondition(`the CNI result names no interface ${ifName} in the pod's network namespace with a MAC address`);
  }
  const addresses: PodAddress[] = [];
  for (const a of r.ips ?? []) {
    if (a.interface !== undefined && a.interface !== index) continue;
    if (typeof a.address !== 'string' || !a.address.includes('/')) continue;
    const ip = a.address.slice(0, a.address.indexOf('/'));
    addresses.push({ cidr: a.address, ip, family: ip.includes(':') ? 6 : 4, ...(a.gateway ? { gateway: a.gateway } : {}) });
  }
  if (addresses.length === 0) throw failedPrecondition(`the CNI result gives interface ${ifName} no IP address`);
  addresses.sort((a, b) => a.family - b.family);
  const routes = (r.routes ?? [])
    .filter((rt) => typeof rt.dst === 'string')
    .map((rt) => ({ destination: rt.dst!, ...(rt.gw ? { gateway: rt.gw } : {}) }));
  return { mac, addresses, routes };
}
