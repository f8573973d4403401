import { invalidArgument } from '../errors.js';

/**
 * The `[registry]` section of podvisor's config, with containerd's mirror semantics:
 *
 * ```toml
 * [registry.mirrors."registry.k8s.io"]
 * endpoints = ["http://127.0.0.1:5000"]
 * ```
 *
 * Pulls of `registry.k8s.io/...` try each endpoint in order, then the registry itself. An `http://`
 * endpoint is spoken to in plain HTTP. The key `"*"` applies to every registry without its own entry.
 * The image keeps its original name whichever endpoint served it.
 */
export interface RegistryMirror {
  readonly endpoints: readonly string[];
}

export interface RegistryConfig {
  readonly mirrors: Readonly<Record<string, RegistryMirror>>;
  /** registry hosts spoken to in plain HTTP without a mirror entry (loopback hosts always are) */
  readonly insecure?: readonly string[];
  /**
   * Serve a digest pull from the local store without asking the registry (M6). Off by
   * default: like containerd, a pull by digest is resolved (HEAD) with the caller's
   * credentials, so an image pulled with credentials is not handed to a pull without
   * them. An air-gapped node whose registry is gone may turn it on.
   */
  readonly trustCachedDigests?: boolean;
  /**
   * Hosts a registry may redirect to, or name as its token realm, even though they resolve
   * to a loopback or private address (M5); link-local addresses are never allowed.
   */
  readonly internalHosts?: readonly string[];
}

export const EMPTY_REGISTRY_CONFIG: RegistryConfig = { mirrors: {}, insecure: [] };
const KNOWN_KEYS = ['mirrors', 'insecure', 'trust_cached_digests', 'internal_hosts'];

/**
 * Checks the raw `registry` table (as parsed from TOML) and returns it typed. Errors name the
 * offending key under `where` (e.g. `registry.mirrors."gcr.io".endpoints[0]`).
 * containerd's spelling `endpoint` is accepted as well as `endpoints`.
 */
export function validateRegistryConfig(raw: unknown, where = 'registry'): RegistryConfig {
  if (raw === undefined || raw === null) return EMPTY_REGISTRY_CONFIG;
  if (!isTable(raw)) throw invalidArgument(`${where} must be a table`);
  for (const key of Object.keys(raw)) {
    if (!KNOWN_KEYS.includes(key)) throw invalidArgument(`${where}.${key} is not a known setting (known: ${KNOWN_KEYS.join(', ')})`);
  }
  if (raw.trust_cached_digests !== undefined && typeof raw.trust_cached_digests !== 'boolean') {
    throw invalidArgument(`${where}.trust_cached_digests must be true or false`);
  }
  const internalHosts = asList(raw.internal_hosts, `${where}.internal_hosts`);
  const insecure = asList(raw.insecure, `${where}.insecure`);
  for (const host of insecure) {
    if (!HOST.test(host)) throw invalidArgument(`${where}.insecure: "${host}" is not a registry host (expected e.g. 127.0.0.1:5000)`);
  }
  const mirrorsRaw = raw.mirrors ?? {};
  if (!isTable(mirrorsRaw)) throw invalidArgument(`${where}.mirrors must be a table of registry host → { endpoints = [...] }`);

  const mirrors: Record<string, RegistryMirror> = {};
  for (const [host, entry] of Object.entries(mirrorsRaw)) {
    const at = `${where}.mirrors."${host}"`;
    if (host !== '*' && !HOST.test(host)) {
      throw invalidArgument(`${at}: "${host}" is not a registry host (expected e.g. registry.k8s.io or 127.0.0.1:5000)`);
    }
    if (!isTable(entry)) throw invalidArgument(`${at} must be a table with endpoints = ["https://..."]`);
    for (const key of Object.keys(entry)) {
      if (key !== 'endpoints' && key !== 'endpoint') throw invalidArgument(`${at}.${key} is not a known setting (known: endpoints)`);
    }
    const list = [...asList(entry.endpoints, `${at}.endpoints`), ...asList(entry.endpoint, `${at}.endpoint`)];
    if (list.length === 0) throw invalidArgument(`${at}.endpoints must list at least one URL`);
    mirrors[host] = { endpoints: list.map((e, i) => normaliseEndpoint(e, `${at}.endpoints[${i}]`)) };
  }
  return { mirrors, insecure, trustCachedDigests: raw.trust_cached_digests === true, internalHosts };
}

const HOST = /^[A-Za-z0-9.-]+(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$/;

/** `http(s)://host[:port][/prefix]` without a trailing slash; anything else is an error. */
function normaliseEndpoint(value: string, at: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalidArgument(`${at}: "${value}" is not a URL (expected e.g. https://mirror.example.com or http://127.0.0.1:5000)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalidArgument(`${at}: "${value}" must start with http:// or https://`);
  if (url.username || url.password) throw invalidArgument(`${at}: credentials do not belong in an endpoint URL`);
  if (url.search || url.hash) throw invalidArgument(`${at}: "${value}" must not have a query or fragment`);
  return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
}

function asList(value: unknown, at: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw invalidArgument(`${at} must be a list of URL strings`);
  return value as string[];
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
