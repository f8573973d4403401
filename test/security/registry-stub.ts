import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sha256Digest } from '../../src/image/digest.js';

/**
 * A hostile registry for the security tests: a plain HTTP server on
 * 127.0.0.1 whose answers each test scripts. (The tests of honest pulls use
 * the real docker-registry in test/helpers/registry.ts.)
 */
export interface RegistryStub {
  readonly host: string;
  readonly url: string;
  readonly requests: Array<{ method: string; url: string; authorization?: string }>;
  handle: (req: IncomingMessage, res: ServerResponse) => void;
  stop(): Promise<void>;
}

export async function startRegistryStub(): Promise<RegistryStub> {
  const state = {
    requests: [] as RegistryStub['requests'],
    handle: ((_req, res) => { res.writeHead(404).end(); }) as RegistryStub['handle'],
  };
  const server: Server = createServer((req, res) => {
    state.requests.push({ method: req.method ?? '', url: req.url ?? '', ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    state.handle(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    requests: state.requests,
    get handle() { return state.handle; },
    set handle(h) { state.handle = h; },
    async stop() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** An OCI manifest naming a config and layers of the given declared sizes (digests of made-up content). */
export function manifestDeclaring(configSize: number, layerSizes: number[]): { body: Buffer; digest: string } {
  const fake = (i: number) => sha256Digest(Buffer.from(`blob ${i}`));
  const body = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: fake(0), size: configSize },
    layers: layerSizes.map((size, i) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: fake(i + 1), size })),
  }));
  return { body, digest: sha256Digest(body) };
}

export function serveManifest(res: ServerResponse, m: { body: Buffer; digest: string }, method = 'GET'): void {
  res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': m.digest, 'content-length': String(m.body.length) });
  res.end(method === 'HEAD' ? undefined : m.body);
}
