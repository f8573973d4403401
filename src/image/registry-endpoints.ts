import { DEFAULT_DOMAIN } from './reference.js';
import type { RegistryConfig } from './registry-config.js';

/** One place to ask for a repository: base URL (scheme, host, optional path prefix) and whether it is a mirror. */
export interface RegistryEndpoint {
  readonly baseUrl: string;
  readonly mirror: boolean;
}

/** Docker Hub's API lives on another host than its image names say. */
const DOCKER_HUB_API = 'registry-1.docker.io';

/**
 * Endpoints to try for a registry host, in order: its configured mirrors (or the `"*"` mirrors),
 * then the registry itself — containerd's order. Loopback registries and those listed in
 * `insecure` are spoken to in plain HTTP (a local test or air-gap registry rarely has a
 * certificate); every other registry over HTTPS.
 */
export function endpointsFor(domain: string, config: RegistryConfig): RegistryEndpoint[] {
  const mirrors = config.mirrors[domain] ?? config.mirrors['*'];
  const plain = isLoopback(domain) || (config.insecure ?? []).includes(domain);
  const upstream = `${plain ? 'http' : 'https'}://${domain === DEFAULT_DOMAIN ? DOCKER_HUB_API : domain}`;
  const list: RegistryEndpoint[] = (mirrors?.endpoints ?? []).map((baseUrl) => ({ baseUrl, mirror: baseUrl !== upstream }));
  if (!list.some((e) => e.baseUrl === upstream)) list.push({ baseUrl: upstream, mirror: false });
  return list;
}

export function isLoopback(domain: string): boolean {
  const host = domain.replace(/:[0-9]+$/, '').replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.[0-9]+\.[0-9]+\.[0-9]+$/.test(host);
}
