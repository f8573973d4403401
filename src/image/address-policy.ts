import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions } from 'node:dns';
import { isIP } from 'node:net';
import { permissionDenied } from '../errors.js';

/**
 * Where a registry may send podvisord (M5, security review 2026-12-01). Image
 * references come from tenants, and podvisord runs in the host's network
 * namespace, so a registry's redirects and token realm must not turn it into
 * a proxy towards the node's own services or the cloud metadata endpoint.
 *
 * The rule: a redirect or realm target that resolves to a link-local address
 * (169.254.0.0/16, fe80::/10: metadata services) is always refused; one that
 * resolves to loopback, private, shared (CGNAT) or unique-local space only
 * when the registry itself lives there (a local or air-gapped registry) or
 * the host is listed in `registry.internal_hosts`. Addresses are checked when
 * the connection is made (the DNS answer actually used), so a name that
 * resolves differently later cannot slip past. The registry's own host is not
 * restricted (a pod may name `localhost:5000/x`, as with containerd).
 */
export type AddressClass = 'public' | 'internal' | 'link-local';

export function classifyAddress(ip: string): AddressClass {
  const v4 = ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip;
  if (isIP(v4) === 4) {
    const [a, b] = v4.split('.').map(Number) as [number, number];
    if (a === 169 && b === 254) return 'link-local';
    if (a === 127 || a === 10 || a === 0 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127)) return 'internal';
    return 'public';
  }
  const low = v4.toLowerCase();
  if (/^fe[89ab]/.test(low)) return 'link-local';
  if (low === '::1' || low === '::' || /^f[cd]/.test(low)) return 'internal';
  return 'public';
}

export function hostClass(hostname: string): AddressClass | undefined {
  const host = hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost' || host.endsWith('.localhost')) return 'internal';
  return isIP(host) ? classifyAddress(host) : undefined;
}

export interface TargetPolicy {
  /** The registry itself is on an internal address: its redirects and realm may be too. */
  readonly registryInternal: boolean;
  readonly internalHosts: readonly string[];
}

export function policyFor(registry: URL, internalHosts: readonly string[]): TargetPolicy {
  return { registryInternal: hostClass(registry.hostname) === 'internal', internalHosts };
}

function refusal(what: string, host: string, cls: AddressClass): Error {
  const why = cls === 'link-local' ? 'a link-local address (never allowed)' : 'a loopback or private address (allowed only for registries that are themselves internal, or hosts in registry.internal_hosts)';
  return permissionDenied(`${what} points at ${host}, ${why}; refusing to follow it`);
}

function allowed(policy: TargetPolicy, host: string, cls: AddressClass): boolean {
  if (cls === 'public') return true;
  if (cls === 'link-local') return false;
  return policy.registryInternal || policy.internalHosts.includes(host);
}

/** Checks a target whose host is an IP literal or localhost at once; names are checked at connect time by `guardedLookup`. */
export function checkTarget(policy: TargetPolicy, url: URL, what: string): void {
  const cls = hostClass(url.hostname);
  if (cls && !allowed(policy, url.hostname, cls)) throw refusal(what, url.hostname, cls);
}

/** A `lookup` for http.request that refuses names resolving to addresses the policy forbids. */
export function guardedLookup(policy: TargetPolicy, what: string) {
  return (hostname: string, options: LookupAllOptions | number | object, callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void): void => {
    dnsLookup(hostname, { ...(typeof options === 'object' ? options : {}), all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      for (const a of addresses) {
        const cls = classifyAddress(a.address);
        if (!allowed(policy, hostname, cls)) return callback(refusal(what, `${hostname} (${a.address})`, cls), []);
      }
      const all = typeof options === 'object' && (options as LookupAllOptions).all;
      if (all) callback(null, addresses);
      else callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}
