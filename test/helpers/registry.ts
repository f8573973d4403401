import { execFile, execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, randomBytes, sign, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { cleanupOnSignal } from './signal-cleanup.js';

const REPO_ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const run = promisify(execFile);

/** A port nobody listens on right now (the kernel picks it). */
export async function freePort(): Promise<number> {
  const srv = createNetServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

export interface TestRegistry {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly url: string;
  readonly dir: string;
  stop(): Promise<void>;
}

export interface RegistryOptions {
  /** share another registry's storage (serve what was pushed there) */
  readonly dataDir?: string;
  readonly token?: { realm: string; service: string; issuer: string; certFile: string };
  /** Basic auth: these users (passwords hashed with bcrypt by apache2-utils' htpasswd) */
  readonly basicUsers?: Record<string, string>;
}

/** Starts a real Debian docker-registry with hack/registry, in its own temp folder and port. */
export async function startRegistry(opts: RegistryOptions = {}): Promise<TestRegistry> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'podvisor-registry-'));
  const env: NodeJS.ProcessEnv = { ...process.env, PODVISOR_REGISTRY_PORT: String(port), PODVISOR_REGISTRY_DIR: dir };
  if (opts.dataDir) env.PODVISOR_REGISTRY_DATA = opts.dataDir;
  if (opts.basicUsers) {
    const file = join(dir, 'htpasswd');
    const lines = Object.entries(opts.basicUsers).map(([u, p]) => execFileSync('htpasswd', ['-Bbn', u, p]).toString().trim());
    writeFileSync(file, lines.join('\n') + '\n', { mode: 0o600 });
    env.PODVISOR_REGISTRY_HTPASSWD = file;
  }
  if (opts.token) {
    env.PODVISOR_REGISTRY_TOKEN_REALM = opts.token.realm;
    env.PODVISOR_REGISTRY_TOKEN_SERVICE = opts.token.service;
    env.PODVISOR_REGISTRY_TOKEN_ISSUER = opts.token.issuer;
    env.PODVISOR_REGISTRY_TOKEN_CERTS = opts.token.certFile;
  }
  try {
    await run(join(REPO_ROOT, 'hack/registry'), ['start'], { env });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const stop = async () => {
    forget();
    await run(join(REPO_ROOT, 'hack/registry'), ['stop'], { env });
    rmSync(dir, { recursive: true, force: true });
  };
  const forget = cleanupOnSignal(stop);
  return { host: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}`, dir, stop };
}

/** Builds and pushes the project's test images (hack/make-test-images) to a registry. */
export async function pushTestImages(reg: TestRegistry): Promise<void> {
  const port = reg.host.split(':')[1]!;
  await run(join(REPO_ROOT, 'hack/make-test-images'), [], { env: { ...process.env, PODVISOR_REGISTRY_PORT: port }, maxBuffer: 16 << 20 });
}

/** Digest of what a registry serves for `repo:ref` (from a HEAD request). */
export async function remoteDigest(reg: TestRegistry, repo: string, ref: string, accept = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json'): Promise<string> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, { method: 'HEAD', headers: { accept } });
  if (!res.ok) throw new Error(`HEAD ${repo}:${ref} answered ${res.status}`);
  return res.headers.get('docker-content-digest')!;
}

export async function remoteJson<T>(reg: TestRegistry, repo: string, ref: string): Promise<T> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' } });
  return (await res.json()) as T;
}

export async function remoteBlob(reg: TestRegistry, repo: string, digest: string): Promise<Buffer> {
  return Buffer.from(await (await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`)).arrayBuffer());
}

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * Pushes a hand-made image (layers as given, already encoded) with the Distribution API:
 * for layers the registry must hold exactly as the test built them, e.g. malicious ones.
 * Returns the manifest digest and the config digest (the image id).
 */
export async function pushImage(reg: TestRegistry, repo: string, tag: string, layers: { data: Buffer; diffId: string; mediaType: string }[], config: Record<string, unknown> = {}): Promise<{ manifestDigest: string; id: string }> {
  const configBody = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: {}, ...config,
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
  }));
  const blobs = [configBody, ...layers.map((l) => l.data)];
  for (const blob of blobs) {
    const start = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    if (start.status !== 202) throw new Error(`upload start for ${repo} answered ${start.status}`);
    const loc = new URL(start.headers.get('location')!, reg.url);
    loc.searchParams.set('digest', sha256(blob));
    const put = await fetch(loc, { method: 'PUT', body: new Uint8Array(blob), headers: { 'content-type': 'application/octet-stream' } });
    if (put.status !== 201) throw new Error(`upload of ${sha256(blob)} to ${repo} answered ${put.status}: ${await put.text()}`);
  }
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(configBody), size: configBody.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: sha256(l.data), size: l.data.length })),
  }));
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT', body: new Uint8Array(manifest), headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  if (res.status !== 201) throw new Error(`manifest PUT ${repo}:${tag} answered ${res.status}: ${await res.text()}`);
  return { manifestDigest: sha256(manifest), id: sha256(configBody) };
}

export interface TokenServer {
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  readonly certFile: string;
  /** a token the server would issue for pulling `repo`, for the CRI registry_token case */
  issue(repo: string, subject: string): string;
  /** how many tokens it issued, by grant: basic / refresh */
  readonly issued: { basic: number; refresh: number };
  stop(): Promise<void>;
}

/**
 * A small token server for the registry's `auth: token` mode: it checks Basic credentials (GET)
 * or an OAuth2 refresh token (POST, identity tokens) and returns JWTs signed RS256 with a
 * self-signed certificate (made with openssl) that the registry trusts through rootcertbundle.
 * The certificate travels in the JWT's `x5c` header, which the registry verifies against it.
 */
export async function startTokenServer(users: Record<string, string>, refreshTokens: Record<string, string>): Promise<TokenServer> {
  const dir = mkdtempSync(join(tmpdir(), 'podvisor-token-'));
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile,
    '-days', '2', '-subj', '/CN=podvisor-test-token-issuer'], { stdio: 'ignore' });
  const key = createPrivateKey(readFileSync(keyFile));
  const certDer = new X509Certificate(readFileSync(certFile)).raw.toString('base64');
  const service = 'podvisor-test-registry';
  const issuer = 'podvisor-test-issuer';
  const issued = { basic: 0, refresh: 0 };
  const b64u = (b: Buffer | string) => Buffer.from(b).toString('base64url');

  const issue = (repo: string, subject: string) => {
    const now = Math.floor(Date.now() / 1000);
    const header = b64u(JSON.stringify({ typ: 'JWT', alg: 'RS256', x5c: [certDer] }));
    const claims = b64u(JSON.stringify({
      iss: issuer, sub: subject, aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'),
      access: [{ type: 'repository', name: repo, actions: ['pull'] }],
    }));
    return `${header}.${claims}.${b64u(sign('sha256', Buffer.from(`${header}.${claims}`), key))}`;
  };
  const repoOf = (scope: string | null) => /^repository:([^:]+):/.exec(scope ?? '')?.[1];

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const deny = () => { res.writeHead(401, { 'content-type': 'application/json' }); res.end('{"errors":[{"code":"UNAUTHORIZED"}]}'); };
    const answer = (token: string) => { res.writeHead(200, { 'content-type': 'application/json' }); res.end(JSON.stringify({ token, access_token: token, expires_in: 300 })); };
    if (req.method === 'GET') {
      const m = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
      const [user, ...rest] = m ? Buffer.from(m[1]!, 'base64').toString().split(':') : [];
      const repo = repoOf(url.searchParams.get('scope'));
      if (!user || users[user] === undefined || users[user] !== rest.join(':') || !repo || url.searchParams.get('service') !== service) return deny();
      issued.basic++;
      return answer(issue(repo, user));
    }
    if (req.method === 'POST') {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        const form = new URLSearchParams(body);
        const subject = refreshTokens[form.get('refresh_token') ?? ''];
        const repo = repoOf(form.get('scope'));
        if (form.get('grant_type') !== 'refresh_token' || !subject || !repo) return deny();
        issued.refresh++;
        answer(issue(repo, subject));
      });
      return;
    }
    deny();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    realm: `http://127.0.0.1:${port}/token`, service, issuer, certFile, issue, issued,
    async stop() {
      await closeServer(server);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** What a fault-injecting front does with one request; `pass` forwards it to the registry. */
export type FrontRule = (req: IncomingMessage, res: ServerResponse) => 'pass' | 'handled' | { transform: (body: Buffer) => Buffer };

export interface RegistryFront {
  readonly host: string;
  readonly url: string;
  rule: FrontRule;
  readonly requests: string[];
  stop(): Promise<void>;
}

/**
 * An HTTP front for a real registry that can inject faults: status codes, silence, redirects,
 * altered bodies. It forwards everything else unchanged.
 */
export async function startFront(target: TestRegistry): Promise<RegistryFront> {
  const sockets = new Set<import('node:net').Socket>();
  const front: { rule: FrontRule; requests: string[] } = { rule: () => 'pass', requests: [] };
  const server: Server = createServer((req, res) => {
    front.requests.push(`${req.method} ${req.url}`);
    const decision = front.rule(req, res);
    if (decision === 'handled') return;
    const upstream = request(`${target.url}${req.url}`, { method: req.method, headers: { ...req.headers, host: target.host } }, (up) => {
      if (decision === 'pass') {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
        return;
      }
      const chunks: Buffer[] = [];
      up.on('data', (c: Buffer) => chunks.push(c));
      up.on('end', () => {
        const body = decision.transform(Buffer.concat(chunks));
        res.writeHead(up.statusCode ?? 502, { ...up.headers, 'content-length': String(body.length) });
        res.end(req.method === 'HEAD' ? undefined : body);
      });
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    get rule() { return front.rule; },
    set rule(r: FrontRule) { front.rule = r; },
    requests: front.requests,
    async stop() {
      for (const s of sockets) s.destroy();
      await closeServer(server);
    },
  };
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections?.();
  return new Promise((r) => server.close(() => r()));
}
