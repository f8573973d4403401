import { invalidArgument } from '../errors.js';

/**
 * An image reference split into its parts and normalised the way containerd and
 * Docker do it: `busybox` → `docker.io/library/busybox:latest`.
 */
export interface ImageReference {
  /** Registry host (and port): `docker.io`, `registry.k8s.io`, `127.0.0.1:5000`. */
  readonly domain: string;
  /** Repository path inside the registry: `library/busybox`. */
  readonly path: string;
  /** Tag, when one was given or implied (`latest` when neither tag nor digest is given). */
  readonly tag?: string;
  /** Manifest digest (`sha256:…`), when the reference pins one. */
  readonly digest?: string;
}

export const DEFAULT_DOMAIN = 'docker.io';
const LEGACY_DEFAULT_DOMAIN = 'index.docker.io';
const OFFICIAL_REPO_PREFIX = 'library/';
const MAX_NAME_LENGTH = 255;

// Grammar from the distribution reference package (facts, written out here).
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

/** Parses and normalises a reference; throws INVALID_ARGUMENT naming what is wrong. */
export function parseReference(input: string): ImageReference {
  const raw = input.trim();
  const fail = (why: string) => invalidArgument(`invalid image reference "${input}": ${why}`);
  if (raw === '') throw fail('it is empty');

  let rest = raw;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw fail(`"${digest}" is not a digest (expected sha256:<64 hex> or sha512:<128 hex>)`);
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw fail(`"${tag}" is not a valid tag`);
  }

  let domain = DEFAULT_DOMAIN;
  let path = rest;
  const firstSlash = rest.indexOf('/');
  if (firstSlash >= 0) {
    const first = rest.slice(0, firstSlash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase()) {
      domain = first;
      path = rest.slice(firstSlash + 1);
    }
  }
  if (!DOMAIN.test(domain)) throw fail(`"${domain}" is not a registry host name`);
  if (domain === LEGACY_DEFAULT_DOMAIN) domain = DEFAULT_DOMAIN;
  if (domain === DEFAULT_DOMAIN && !path.includes('/')) path = OFFICIAL_REPO_PREFIX + path;

  if (path === '') throw fail('the repository name is empty');
  for (const component of path.split('/')) {
    if (!PATH_COMPONENT.test(component)) {
      throw fail(component !== component.toLowerCase()
        ? 'repository names must be lowercase'
        : `"${component}" is not a valid repository path component`);
    }
  }
  if (domain.length + 1 + path.length > MAX_NAME_LENGTH) throw fail(`the name is longer than ${MAX_NAME_LENGTH} characters`);

  if (tag === undefined && digest === undefined) tag = 'latest';
  return { domain, path, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/** `docker.io/library/busybox` */
export function repositoryName(ref: ImageReference): string {
  return `${ref.domain}/${ref.path}`;
}

/** `docker.io/library/busybox:latest`, `…@sha256:…`, or `…:tag@sha256:…`. */
export function formatReference(ref: ImageReference): string {
  return repositoryName(ref) + (ref.tag !== undefined ? `:${ref.tag}` : '') + (ref.digest !== undefined ? `@${ref.digest}` : '');
}

/** The tag form of a reference (`name:tag`), or undefined for a digest-only reference. */
export function taggedName(ref: ImageReference): string | undefined {
  return ref.tag !== undefined ? `${repositoryName(ref)}:${ref.tag}` : undefined;
}

/** The digest form `name@sha256:…` for a manifest digest. */
export function digestedName(ref: ImageReference, manifestDigest: string): string {
  return `${repositoryName(ref)}@${manifestDigest}`;
}

/** True when the text looks like a reference at all (used to tell ids from names). */
export function isDigest(text: string): boolean {
  return DIGEST.test(text);
}
