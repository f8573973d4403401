import { createHash } from 'node:crypto';
import { invalidArgument } from '../errors.js';

/** The CRI `AuthConfig` fields podvisor uses (camelCase, as proto-loader delivers them). */
export interface RegistryAuth {
  username?: string;
  password?: string;
  /** base64 of `username:password` (the docker config.json form) */
  auth?: string;
  serverAddress?: string;
  /** OAuth2 refresh token, exchanged at the token server for an access token */
  identityToken?: string;
  /** a bearer token to send to the registry as is */
  registryToken?: string;
}

export type Credentials =
  | { readonly kind: 'basic'; readonly username: string; readonly password: string }
  | { readonly kind: 'identity'; readonly username: string; readonly refreshToken: string }
  | { readonly kind: 'registry'; readonly token: string };

/**
 * Picks the credentials an AuthConfig carries, most specific first: a registry token, an identity
 * token, username/password, then the `auth` blob. Undefined when it carries none (anonymous pull).
 * Errors never repeat the secret itself.
 */
export function credentialsFrom(auth: RegistryAuth | undefined | null): Credentials | undefined {
  if (!auth) return undefined;
  if (auth.registryToken) return { kind: 'registry', token: auth.registryToken };
  if (auth.identityToken) return { kind: 'identity', username: auth.username ?? '', refreshToken: auth.identityToken };
  if (auth.username) return { kind: 'basic', username: auth.username, password: auth.password ?? '' };
  if (auth.auth) {
    const decoded = Buffer.from(auth.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) throw invalidArgument('the "auth" field of the registry credentials is not base64 of "username:password"');
    return { kind: 'basic', username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (auth.password) throw invalidArgument('registry credentials have a password but no username');
  return undefined;
}

/** A key that tells credentials apart without holding the secret in clear (sha256 of it). */
export function credentialKey(creds: Credentials | undefined): string {
  if (!creds) return 'anonymous';
  const secret = creds.kind === 'basic' ? `${creds.username}\0${creds.password}` : creds.kind === 'identity' ? `${creds.username}\0${creds.refreshToken}` : creds.token;
  return `${creds.kind}:${createHash('sha256').update(secret).digest('hex')}`;
}

export function basicAuthorization(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}

/** One challenge from a `WWW-Authenticate` header: `Bearer realm="…",service="…",scope="…"`. */
export interface AuthChallenge {
  readonly scheme: string; // lower-case: 'bearer' | 'basic' | …
  readonly params: Readonly<Record<string, string>>;
}

/**
 * Parses a `WWW-Authenticate` header value (RFC 7235): one or more challenges, each a scheme
 * followed by comma-separated `key=value` or `key="quoted value"` parameters.
 */
export function parseChallenges(header: string): AuthChallenge[] {
  const challenges: { scheme: string; params: Record<string, string> }[] = [];
  let i = 0;
  const s = header;
  const skipSpace = () => { while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++; };
  const readToken = () => {
    const start = i;
    while (i < s.length && /[A-Za-z0-9!#$%&'*+.^_`|~-]/.test(s[i]!)) i++;
    return s.slice(start, i);
  };
  while (i < s.length) {
    skipSpace();
    while (s[i] === ',') { i++; skipSpace(); }
    const token = readToken();
    if (!token) { i++; continue; }
    skipSpace();
    if (s[i] === '=' && challenges.length > 0) {
      // a parameter of the current challenge
      i++;
      skipSpace();
      let value = '';
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++;
          value += s[i];
          i++;
        }
        i++;
      } else {
        const start = i;
        while (i < s.length && s[i] !== ',' && s[i] !== ' ') i++;
        value = s.slice(start, i);
      }
      challenges[challenges.length - 1]!.params[token.toLowerCase()] = value;
    } else {
      challenges.push({ scheme: token.toLowerCase(), params: {} });
    }
  }
  return challenges;
}
