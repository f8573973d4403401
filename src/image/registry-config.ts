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
}

export const EMPTY_REGISTRY_CONFIG: RegistryConfig = { mirrors: {}, insecure: [] };

/**
 * Checks the raw `registry` table (as parsed from TOML) and returns it typed. Errors name the
 * offending key under `where` (e.g. `registry.mirrors."gcr.io".endpoints[0]`).
 * containerd's spelling `endpoint` is accepted as well as `endpoints`.
 */
export function validateRegistryConfig(raw: unknown, where = 'registry'): RegistryConfig {
  if (raw === undefined || raw === null) return EMPTY_REGISTRY_CONFIG;
  if (!isTable(raw)) throw invalidArgument(`${where} must be a table`);
  for (const key of Object.keys(raw)) {
    if (key !== 'mirrors' && key !== 'insecure') throw invalidArgument(`${where}.${key} is not a known setting (known: mirrors, insecure)`);
  }
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
  return { mirrors, insecure };
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
