import { request as httpRequest, Agent as HttpAgent, type IncomingMessage, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  deadlineExceeded, failedPrecondition, messageOf, notFound, permissionDenied, PodvisorError,
  unauthenticated, unavailable,
} from '../errors.js';
import { logger } from '../log.js';
import { checkTarget, guardedLookup, policyFor, type TargetPolicy } from './address-policy.js';
import { basicAuthorization, credentialKey, parseChallenges, type Credentials } from './auth.js';
import { digestWithAlgorithmOf, sha256Digest } from './digest.js';
import { MANIFEST_ACCEPT } from './manifest.js';
import { TransferStats } from './transfer-stats.js';

const log = logger('image.registry');

const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 8 });
const httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 8 });

const MAX_REDIRECTS = 10;
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface RegistryClientOptions {
  /** `https://registry.k8s.io` or a mirror such as `http://127.0.0.1:5000` (an optional path prefix is kept). */
  readonly baseUrl: string;
  /** repository path in that registry: `library/busybox` */
  readonly repository: string;
  readonly credentials?: Credentials;
  /** idle limit for connect, response headers and each gap in a body */
  readonly timeoutMs?: number;
  /** attempts for network errors, 429 and 5xx (first try included) */
  readonly attempts?: number;
  /** first retry delay; doubles per retry */
  readonly backoffMs?: number;
  readonly stats?: TransferStats;
  /** Hosts redirects and token realms may name although they resolve to internal addresses (M5). */
  readonly internalHosts?: readonly string[];
}

export interface FetchedManifest {
  readonly mediaType: string;
  readonly body: Buffer;
  readonly digest: string;
}

interface CachedToken {
  readonly authorization: string;
  readonly expiresAt: number;
}

/**
 * A client for one repository on one registry endpoint, speaking the Distribution v2 API.
 * It answers 401 challenges (Bearer tokens from the realm, or Basic), follows redirects (dropping
 * the registry's credentials when a redirect leaves the registry's host, e.g. to blob storage),
 * retries network errors, 429 and 5xx with exponential backoff, and gives up on a connection that
 * stays silent for `timeoutMs`. Errors are PodvisorErrors that name the registry and repository,
 * never the credentials.
 */
export class RegistryClient {
  private readonly base: URL;
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly stats: TransferStats;
  private authorization: string | undefined;
  private static readonly tokens = new Map<string, CachedToken>();

  constructor(private readonly opts: RegistryClientOptions) {
    this.base = new URL(opts.baseUrl.replace(/\/+$/, '') + '/');
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.attempts = Math.max(1, opts.attempts ?? 4);
    this.backoffMs = opts.backoffMs ?? 250;
    this.stats = opts.stats ?? new TransferStats();
    this.policy = policyFor(this.base, opts.internalHosts ?? []);
  }

  private readonly policy: TargetPolicy;

  /** Whether a URL is the registry itself (same scheme and host): only then may it see the registry's credentials (L8). */
  private isRegistry(url: URL): boolean {
    return url.protocol === this.base.protocol && url.host === this.base.host;
  }

  /** `registry (repository)` for messages */
  get where(): string {
    return `${this.base.origin}${this.base.pathname.replace(/\/$/, '')} (repository ${this.opts.repository})`;
  }

  /**
   * The digest a tag or digest currently resolves to, from a HEAD request (no body transferred),
   * or undefined when the registry does not say.
   */
  async resolveDigest(reference: string): Promise<string | undefined> {
    const res = await this.send('HEAD', this.manifestPath(reference), { accept: MANIFEST_ACCEPT });
    drain(res);
    const code = res.statusCode ?? 0;
    if (code === 404) throw notFound(`manifest "${reference}" not found at ${this.where}`);
    // some registries do not answer HEAD on manifests; the GET that follows will tell
    if (code === 400 || code === 405 || code === 501) return undefined;
    this.checkStatus(res, `manifest "${reference}"`);
    const header = res.headers['docker-content-digest'];
    return typeof header === 'string' && /^sha(256|512):[a-f0-9]+$/.test(header) ? header : undefined;
  }

  /** GETs a manifest (or index) by tag or digest and verifies it against the digest. */
  async getManifest(reference: string, expectedDigest?: string): Promise<FetchedManifest> {
    const res = await this.send('GET', this.manifestPath(reference), { accept: MANIFEST_ACCEPT });
    if (res.statusCode === 404) {
      drain(res);
      throw notFound(`manifest "${reference}" not found at ${this.where}`);
    }
    this.checkStatus(res, `manifest "${reference}"`);
    const body = await readLimited(res, MAX_MANIFEST_BYTES, `manifest "${reference}" from ${this.where}`);
    this.stats.bytesReceived += body.length;
    const mediaType = String(res.headers['content-type'] ?? '').split(';')[0]!.trim();
    const headerDigest = typeof res.headers['docker-content-digest'] === 'string' ? res.headers['docker-content-digest'] : undefined;
    const pinned = expectedDigest ?? (reference.includes(':') ? reference : undefined) ?? headerDigest;
    const digest = pinned !== undefined ? digestWithAlgorithmOf(pinned, body) : sha256Digest(body);
    if (pinned !== undefined && digest !== pinned) {
      throw failedPrecondition(`manifest "${reference}" from ${this.where}: content digest mismatch, expected ${pinned} but the data hashes to ${digest}; nothing was stored`);
    }
    return { mediaType, body, digest };
  }

  /**
   * GETs a blob. The body is a stream the caller must consume (the content store verifies its
   * digest while writing it); bytes are counted in the transfer stats as they arrive.
   */
  async openBlob(digest: string): Promise<AsyncIterable<Buffer>> {
    const res = await this.send('GET', `blobs/${digest}`, {});
    if (res.statusCode === 404) {
      drain(res);
      throw notFound(`blob ${digest} not found at ${this.where}`);
    }
    this.checkStatus(res, `blob ${digest}`);
    return this.counted(res);
  }

  private async *counted(res: IncomingMessage): AsyncGenerator<Buffer> {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      this.stats.bytesReceived += chunk.length;
      yield chunk;
    }
  }

  private manifestPath(reference: string): string {
    return `manifests/${reference}`;
  }

  private checkStatus(res: IncomingMessage, what: string): void {
    const code = res.statusCode ?? 0;
    if (code >= 200 && code < 300) return;
    drain(res);
    const text = `${what} at ${this.where}: registry answered ${code} ${res.statusMessage ?? ''}`.trim();
    if (code === 401) throw unauthenticated(`${text}; the credentials were missing or refused`);
    if (code === 403) throw permissionDenied(`${text}; access denied`);
    if (code === 404) throw notFound(text);
    if (code === 429 || code >= 500) throw unavailable(`${text} (after ${this.attempts} attempts)`);
    throw failedPrecondition(text);
  }

  /**
   * One logical request: authentication on 401, retries with backoff on transient failures.
   * Returns the final response whatever its status (callers map statuses to errors).
   */
  private async send(method: 'GET' | 'HEAD', path: string, headers: Record<string, string>): Promise<IncomingMessage> {
    const url = new URL(`v2/${this.opts.repository}/${path}`, this.base);
    let authenticated = false;
    for (let attempt = 1; ; attempt++) {
      let res: IncomingMessage;
      try {
        res = await this.sendFollowingRedirects(method, url, headers);
      } catch (e) {
        if (attempt >= this.attempts || !isTransient(e)) throw this.networkError(e, method, url);
        await this.backoff(attempt, messageOf(e));
        continue;
      }
      const code = res.statusCode ?? 0;
      if (code === 401 && !authenticated) {
        drain(res);
        authenticated = true;
        await this.authenticate(res.headers);
        attempt--; // answering a challenge is not a retry
        continue;
      }
      if ((code === 429 || code >= 500) && attempt < this.attempts) {
        drain(res);
        await this.backoff(attempt, `HTTP ${code}`);
        continue;
      }
      return res;
    }
  }

  private async backoff(attempt: number, why: string): Promise<void> {
    const delay = this.backoffMs * 2 ** (attempt - 1) * (0.75 + Math.random() * 0.5);
    log.warn({ registry: this.base.origin, attempt, why, delayMs: Math.round(delay) }, 'registry request failed; retrying');
    await sleep(delay);
  }

  private networkError(e: unknown, method: string, url: URL): PodvisorError {
    if (e instanceof PodvisorError) return e;
    const code = (e as NodeJS.ErrnoException).code;
    const what = `${method} ${url.pathname} at ${this.where}`;
    return unavailable(`${what} failed after ${this.attempts} attempts: ${code ?? ''} ${messageOf(e)}`.replace(/\s+/g, ' ').trim(), e);
  }

  private async sendFollowingRedirects(method: 'GET' | 'HEAD', start: URL, headers: Record<string, string>): Promise<IncomingMessage> {
    let url = start;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const h: Record<string, string> = { 'user-agent': 'podvisor', ...headers };
      // the registry's credentials go to the registry only (same scheme and host: L8), never to a redirect target elsewhere
      if (this.authorization && this.isRegistry(url)) h.authorization = this.authorization;
      const res = await this.rawRequest(method, url, h, url === start ? undefined : 'a registry redirect');
      const code = res.statusCode ?? 0;
      if ([301, 302, 303, 307, 308].includes(code) && res.headers.location) {
        drain(res);
        const from = url;
        url = new URL(res.headers.location, url);
        if (url.protocol !== 'http:' && url.protocol !== 'https:') {
          throw failedPrecondition(`${this.where} redirected to an unsupported URL scheme ${url.protocol}`);
        }
        if (from.protocol === 'https:' && url.protocol === 'http:') {
          throw permissionDenied(`${this.where} redirected from https to plain http (${url.host}); refusing the downgrade`);
        }
        checkTarget(this.policy, url, `a redirect from ${this.where}`);
        continue;
      }
      return res;
    }
    throw failedPrecondition(`${this.where} redirected more than ${MAX_REDIRECTS} times`);
  }

  /** One HTTP request; `guarded` names a target the registry chose (redirect, realm), whose address is checked on connect. */
  private rawRequest(method: string, url: URL, headers: Record<string, string>, guarded?: string): Promise<IncomingMessage> {
    this.stats.requests++;
    const https = url.protocol === 'https:';
    return new Promise((resolve, reject) => {
      const req = (https ? httpsRequest : httpRequest)(url, {
        method,
        headers,
        // A guarded request gets its own connection, so the address check sees every connect.
        ...(guarded ? { agent: false as const, lookup: guardedLookup(this.policy, guarded) as never } : { agent: https ? httpsAgent : httpAgent }),
      });
      req.setTimeout(this.timeoutMs, () => {
        req.destroy(deadlineExceeded(`${method} ${url.pathname} at ${this.where}: no answer within ${this.timeoutMs / 1000} s`));
      });
      req.once('error', reject);
      req.once('response', (res) => {
        // the socket idle timeout keeps guarding the body; surface it as an error on the body stream
        req.once('error', (e) => res.destroy(e));
        resolve(res);
      });
      req.end();
    });
  }

  /** Answers a 401: sets `this.authorization` from the challenge and the credentials, or throws. */
  private async authenticate(headers: IncomingHttpHeaders): Promise<void> {
    const header = headers['www-authenticate'];
    const challenges = parseChallenges(Array.isArray(header) ? header.join(', ') : header ?? '');
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const basic = challenges.find((c) => c.scheme === 'basic');
    const creds = this.opts.credentials;
    if (bearer) {
      if (creds?.kind === 'registry') {
        this.authorization = `Bearer ${creds.token}`;
        return;
      }
      this.authorization = await this.fetchToken(bearer.params);
      return;
    }
    if (basic) {
      if (creds?.kind !== 'basic') throw unauthenticated(`${this.where} requires a username and password (Basic auth), none were given`);
      this.authorization = basicAuthorization(creds.username, creds.password);
      return;
    }
    throw unauthenticated(`${this.where} answered 401 without a usable WWW-Authenticate challenge`);
  }

  /** Gets a bearer token from the challenge's realm (cached per realm, service, scope and user). */
  private async fetchToken(params: Readonly<Record<string, string>>): Promise<string> {
    const realm = params.realm;
    if (!realm) throw unauthenticated(`${this.where} sent a Bearer challenge without a realm`);
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm);
    } catch {
      throw unauthenticated(`${this.where} sent a Bearer challenge with an invalid realm`);
    }
    // The realm is the registry's choice, hence the tenant's (M5): https unless the registry itself is plain http, never internal.
    if (realmUrl.protocol !== 'https:' && !(realmUrl.protocol === 'http:' && this.base.protocol === 'http:')) {
      throw permissionDenied(`${this.where} names a token realm over ${realmUrl.protocol} while the registry is ${this.base.protocol}; refusing it`);
    }
    checkTarget(this.policy, realmUrl, `the token realm of ${this.where}`);
    const scope = params.scope ?? `repository:${this.opts.repository}:pull`;
    const creds = this.opts.credentials;
    const who = creds?.kind === 'basic' || creds?.kind === 'identity' ? 'credentials' : 'anonymous';
    // tokens are cached per secret (hashed, never kept in clear): other credentials never reuse them
    const key = JSON.stringify([realm, params.service ?? '', scope, credentialKey(creds)]);
    const cached = RegistryClient.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return cached.authorization;

    let res: IncomingMessage;
    if (creds?.kind === 'identity') {
      // OAuth2 refresh-token grant, as containerd does for identity tokens
      const form = new URLSearchParams({
        grant_type: 'refresh_token', refresh_token: creds.refreshToken, service: params.service ?? '', scope, client_id: 'podvisor',
      }).toString();
      res = await this.postForm(realmUrl, form);
    } else {
      if (params.service) realmUrl.searchParams.set('service', params.service);
      realmUrl.searchParams.set('scope', scope);
      const h: Record<string, string> = { 'user-agent': 'podvisor' };
      if (creds?.kind === 'basic') h.authorization = basicAuthorization(creds.username, creds.password);
      res = await this.rawRequest('GET', realmUrl, h, `the token realm of ${this.where}`).catch((e) => { throw this.networkError(e, 'GET', realmUrl); });
    }
    const code = res.statusCode ?? 0;
    if (code === 401 || code === 403) {
      drain(res);
      throw unauthenticated(`the token server ${realmUrl.origin}${realmUrl.pathname} refused ${who === 'anonymous' ? 'anonymous access' : 'the credentials'} for ${this.opts.repository} (${code})`);
    }
    if (code < 200 || code >= 300) {
      drain(res);
      throw unavailable(`the token server ${realmUrl.origin}${realmUrl.pathname} answered ${code} for ${this.opts.repository}`);
    }
    const body = await readLimited(res, 1024 * 1024, `token from ${realmUrl.origin}`);
    let parsed: { token?: string; access_token?: string; expires_in?: number };
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw unavailable(`the token server ${realmUrl.origin}${realmUrl.pathname} answered with something that is not JSON`);
    }
    const token = parsed.access_token ?? parsed.token;
    if (!token) throw unavailable(`the token server ${realmUrl.origin}${realmUrl.pathname} answered without a token`);
    const lifetimeS = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : 60;
    const authorization = `Bearer ${token}`;
    // renew a little early so a token does not expire between check and use
    for (const [k, t] of RegistryClient.tokens) if (t.expiresAt <= Date.now()) RegistryClient.tokens.delete(k);
    RegistryClient.tokens.set(key, { authorization, expiresAt: Date.now() + Math.max(0, lifetimeS - 10) * 1000 });
    return authorization;
  }

  private postForm(url: URL, form: string): Promise<IncomingMessage> {
    const https = url.protocol === 'https:';
    return new Promise((resolve, reject) => {
      const req = (https ? httpsRequest : httpRequest)(url, {
        method: 'POST',
        agent: false,
        lookup: guardedLookup(this.policy, `the token realm of ${this.where}`) as never,
        headers: { 'user-agent': 'podvisor', 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(form) },
      });
      req.setTimeout(this.timeoutMs, () => req.destroy(deadlineExceeded(`token server ${url.origin}: no answer within ${this.timeoutMs / 1000} s`)));
      req.once('error', (e) => reject(this.networkError(e, 'POST', url)));
      req.once('response', resolve);
      req.end(form);
    });
  }
}

function isTransient(e: unknown): boolean {
  if (e instanceof PodvisorError) return e.code === 'DEADLINE_EXCEEDED';
  const code = (e as NodeJS.ErrnoException).code;
  return code === undefined || ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'UND_ERR_SOCKET'].includes(code);
}

/** Discards a response body so its socket can be reused. */
function drain(res: IncomingMessage): void {
  res.resume();
  res.on('error', () => {});
}

async function readLimited(res: IncomingMessage, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      res.destroy();
      throw failedPrecondition(`${what} is larger than ${limit} bytes; refusing it`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
