import { writeFile } from 'node:fs/promises';
import { invalidArgument } from '../src/errors.js';
import type { SetupSandboxRequest } from '../src/agent-protocol/types.js';
import { renewIdentity } from './identity.js';
import { mountSharedFs } from './storage.js';

const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const SYSCTL = /^[a-z0-9_]+([./][a-z0-9_-]+)+$/i;
const HOSTS_HEADER = '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n';

/** Pod-wide settings: hostname, DNS, /etc/hosts, sysctls, clock and entropy. */
export async function setupSandbox(req: SetupSandboxRequest): Promise<void> {
  // A clone given a clock but no seed would keep the template's CRNG key: refused before anything changes.
  if (req.clockUnixNanos && req.clockUnixNanos > 0 && (!req.entropy || req.entropy.length < 16)) {
    throw invalidArgument('a clock for a template clone comes with at least 16 bytes of entropy to reseed the CRNG');
  }
  if (req.hostname) {
    if (req.hostname.length > 253 || !HOSTNAME.test(req.hostname)) throw invalidArgument(`hostname ${JSON.stringify(req.hostname)} is not a valid host name`);
    await writeFile('/proc/sys/kernel/hostname', req.hostname);
    await writeFile('/etc/hostname', `${req.hostname}\n`);
  }
  if (req.dns && (req.dns.servers?.length || req.dns.searches?.length || req.dns.options?.length)) {
    const lines = [
      ...(req.dns.servers ?? []).map((s) => `nameserver ${plain('DNS server', s)}`),
      ...(req.dns.searches?.length ? [`search ${req.dns.searches.map((s) => plain('DNS search domain', s)).join(' ')}`] : []),
      ...(req.dns.options?.length ? [`options ${req.dns.options.map((s) => plain('DNS option', s)).join(' ')}`] : []),
    ];
    await writeFile('/etc/resolv.conf', `${lines.join('\n')}\n`);
  }
  if (req.hosts?.length) {
    const lines = req.hosts.map((h) => `${plain('hosts entry IP', h.ip)}\t${h.names.map((n) => plain('hosts entry name', n)).join(' ')}`);
    await writeFile('/etc/hosts', `${HOSTS_HEADER}${lines.join('\n')}\n`);
  }
  for (const [key, value] of Object.entries(req.sysctls ?? {})) {
    if (!SYSCTL.test(key) || key.includes('..')) throw invalidArgument(`sysctl name ${JSON.stringify(key)} is not valid`);
    try {
      await writeFile(`/proc/sys/${key.replaceAll('.', '/')}`, value);
    } catch (err) {
      throw invalidArgument(`cannot set sysctl ${key}=${value}: ${(err as Error).message}`);
    }
  }
  if (req.clockUnixNanos && req.clockUnixNanos > 0) {
    // A template clone: the host's clock (to the microsecond) and a reseeded CRNG, in one helper run.
    await renewIdentity(req.clockUnixNanos, req.entropy!);
  } else if (req.entropy && req.entropy.length > 0) {
    // Writing to urandom mixes the bytes into the pool (without crediting entropy).
    await writeFile('/dev/urandom', req.entropy);
  }
  if (req.sharedFsTag) await mountSharedFs(req.sharedFsTag);
}

/** One whitespace-free token for a config file line. */
function plain(what: string, value: string): string {
  if (!value || /[\s#;]/.test(value)) throw invalidArgument(`${what} ${JSON.stringify(value)} must be a single word`);
  return value;
}
