import { createServer, type Server } from 'node:http';
import { parseListenAddress } from '../config/listen-address.js';
import { invalidArgument, messageOf } from '../errors.js';
import { logger } from '../log.js';
import { EXPOSITION_CONTENT_TYPE, exposition } from './metrics.js';

const log = logger('metrics');

/** Serves the Prometheus text exposition at GET /metrics (and nothing else). */
export async function startMetricsServer(listen: string): Promise<{ server: Server; address: string; close(): Promise<void> }> {
  const parsed = parseListenAddress(listen);
  if (typeof parsed === 'string') throw invalidArgument(`[metrics] listen ${parsed}`);
  const { host, port } = parsed;
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('podvisor serves only GET /metrics here\n');
      return;
    }
    exposition().then(
      (text) => res.writeHead(200, { 'content-type': EXPOSITION_CONTENT_TYPE }).end(text),
      (e) => {
        log.error({ err: messageOf(e) }, 'collecting metrics failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${messageOf(e)}\n`);
      },
    );
  });
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  const address = typeof addr === 'object' && addr ? `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}` : listen;
  log.info({ address }, 'serving Prometheus metrics at /metrics');
  return { server, address, close: () => new Promise((resolve) => server.close(() => resolve())) };
}
