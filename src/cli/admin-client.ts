import { request, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { CliError, EXIT } from './cli-errors.js';

/** Exit codes for the error codes the admin socket answers with. */
const EXIT_FOR_CODE: Record<string, number> = { NOT_FOUND: EXIT.notFound, INVALID_ARGUMENT: EXIT.usage };

/**
 * The CLI's side of podvisord's admin socket (src/admin/admin-server.ts):
 * JSON GETs, streamed text (logs) and upgraded interactive sessions.
 */
export class AdminClient {
  constructor(readonly socketPath: string) {}

  async json<T>(path: string): Promise<T> {
    const res = await this.get(path);
    return JSON.parse((await readAll(res)).toString('utf8')) as T;
  }

  async text(path: string): Promise<string> {
    return (await readAll(await this.get(path))).toString('utf8');
  }

  /** A streamed GET: resolves with the response once its headers say it succeeded. */
  get(path: string): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.socketPath, path, method: 'GET' }, (res) => {
        if (res.statusCode === 200) return resolve(res);
        readAll(res).then((body) => reject(errorFrom(res.statusCode ?? 500, body)), reject);
      });
      req.on('error', (e) => reject(unreachable(this.socketPath, e)));
      req.end();
    });
  }

  /** Opens an interactive session; resolves with the raw socket after the upgrade. */
  session(path: string): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.socketPath, path, method: 'POST', headers: { connection: 'upgrade', upgrade: 'podvisor-session' } });
      req.on('upgrade', (_res, socket, head) => {
        if (head.length) socket.unshift(head);
        resolve(socket);
      });
      req.on('response', (res) => readAll(res).then((body) => reject(errorFrom(res.statusCode ?? 500, body)), reject));
      req.on('error', (e) => reject(unreachable(this.socketPath, e)));
      req.end();
    });
  }
}

function readAll(res: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks)));
    res.on('error', reject);
  });
}

function errorFrom(status: number, body: Buffer): CliError {
  let code = 'INTERNAL';
  let message = body.toString('utf8').trim();
  try {
    const parsed = JSON.parse(message) as { code?: string; message?: string };
    code = parsed.code ?? code;
    message = parsed.message ?? message;
  } catch {
    // a plain-text answer (an upgrade refused before the session started)
    if (status === 404) code = 'NOT_FOUND';
    if (status === 400) code = 'INVALID_ARGUMENT';
  }
  return new CliError(EXIT_FOR_CODE[code] ?? EXIT.failed, message);
}

function unreachable(socket: string, e: Error): CliError {
  return new CliError(EXIT.unavailable, `cannot reach podvisord's admin socket ${socket}: ${e.message} (is podvisord running? is this root?)`);
}
