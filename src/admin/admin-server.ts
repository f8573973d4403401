import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmodSync, rmSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { invalidArgument, isPodvisorError, messageOf, type PodvisorError } from '../errors.js';
import { logger } from '../log.js';
import { EXPOSITION_CONTENT_TYPE, exposition } from '../metrics/metrics.js';
import type { DebugConsoles } from '../debug/console-sessions.js';
import type { OperatorAccess } from '../pod/operator-access.js';
import type { InteractiveProcess } from '../pod/interactive-process.js';
import { FRAME, FrameDecoder, encodeFrame } from './frames.js';
import { streamSandboxLogs } from './log-stream.js';
import { inspectSandbox, sandboxRows } from './sandbox-views.js';

const log = logger('admin');

/** HTTP statuses for PodvisorError codes on the admin socket (the CLI turns them back into exit codes). */
const HTTP_STATUS: Record<string, number> = {
  INVALID_ARGUMENT: 400, NOT_FOUND: 404, ALREADY_EXISTS: 409, FAILED_PRECONDITION: 412, RESOURCE_EXHAUSTED: 429,
  UNIMPLEMENTED: 501, UNAVAILABLE: 503, DEADLINE_EXCEEDED: 504,
};
/** A session whose client reads slower than the process writes is ended rather than buffered without bound. */
const MAX_SESSION_BACKLOG = 8 * 1024 * 1024;

export interface AdminDeps {
  operator: OperatorAccess;
  consoles: DebugConsoles;
}

/**
 * podvisord's admin socket: what the `podvisor` CLI needs that the CRI does not
 * carry (the VM behind a sandbox, guest consoles, operator exec, logs, metrics).
 * HTTP/1.1 on a unix socket that only root can open (0600); interactive
 * sessions upgrade the connection to the frames in frames.ts.
 */
export async function startAdminServer(socketPath: string, deps: AdminDeps): Promise<{ close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    route(req, res, deps).catch((e) => sendError(res, e));
  });
  server.on('upgrade', (req, socket: Duplex) => {
    upgrade(req, socket, deps).catch((e) => {
      socket.end(`HTTP/1.1 ${statusOf(e)} Error\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${messageOf(e)}\n`);
    });
  });
  rmSync(socketPath, { force: true });
  const oldMask = process.umask(0o177); // never looser than 0600, not even for a moment
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
  } finally {
    process.umask(oldMask);
  }
  chmodSync(socketPath, 0o600);
  log.info({ socket: socketPath }, 'admin socket serving the podvisor CLI');
  return {
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
      rmSync(socketPath, { force: true });
    }),
  };
}

async function route(req: IncomingMessage, res: ServerResponse, deps: AdminDeps): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://admin');
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  if (req.method !== 'GET') throw invalidArgument(`${req.method} ${url.pathname}: the admin socket serves GET here`);
  if (parts[0] !== 'v1') throw notFoundPath(url.pathname);
  if (parts[1] === 'sandboxes' && parts.length === 2) return sendJson(res, sandboxRows(deps.operator));
  if (parts[1] === 'sandboxes' && parts.length === 3) return sendJson(res, await inspectSandbox(deps.operator, parts[2]!));
  if (parts[1] === 'sandboxes' && parts.length === 4 && parts[3] === 'logs') {
    const sandbox = deps.operator.findSandbox(parts[2]!);
    if (!sandbox.vm) throw invalidArgument(`sandbox ${sandbox.id.slice(0, 12)} never had a VM, so it has no logs`);
    return streamSandboxLogs(res, sandbox.vm.runDir, {
      source: url.searchParams.get('source') ?? 'all',
      follow: url.searchParams.get('follow') === '1',
      tailBytes: Number(url.searchParams.get('tail_bytes') ?? 1024 * 1024),
    });
  }
  if (parts[1] === 'metrics' && parts.length === 2) {
    res.writeHead(200, { 'content-type': EXPOSITION_CONTENT_TYPE }).end(await exposition());
    return;
  }
  throw notFoundPath(url.pathname);
}

/** Interactive sessions: POST /v1/sandboxes/{q}/console and POST /v1/exec?target=…, with `Upgrade: podvisor-session`. */
async function upgrade(req: IncomingMessage, socket: Duplex, deps: AdminDeps): Promise<void> {
  // A client that goes away at any point must not take podvisord with it.
  socket.on('error', (e) => log.debug({ err: e.message }, 'admin session socket error'));
  const url = new URL(req.url ?? '/', 'http://admin');
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  const q = url.searchParams;
  const size = { rows: Number(q.get('rows') ?? 0) || undefined, cols: Number(q.get('cols') ?? 0) || undefined };
  // Output may come before the 101 line is written (a quick command): hold it until then.
  let held: Buffer[] | undefined = [];
  const send = (type: Parameters<typeof encodeFrame>[0], payload?: Uint8Array | string) => {
    if (held) {
      held.push(encodeFrame(type, payload));
      if (held.reduce((n, b) => n + b.length, 0) > MAX_SESSION_BACKLOG) socket.destroy(new Error('too much output before the session started'));
      return;
    }
    if (socket.writableLength > MAX_SESSION_BACKLOG) {
      socket.destroy(new Error('the client does not read its output'));
      return;
    }
    socket.write(encodeFrame(type, payload));
  };
  let proc: InteractiveProcess;
  let onClientGone: () => void;
  if (parts[0] === 'v1' && parts[1] === 'sandboxes' && parts[3] === 'console' && parts.length === 4) {
    const session = await deps.consoles.open(parts[2]!, { via: 'cli' }, { ...size, term: q.get('term') ?? undefined, onOutput: (d) => send(FRAME.stdout, d) });
    proc = session.process;
    onClientGone = () => void session.close('the client disconnected');
  } else if (parts[0] === 'v1' && parts[1] === 'exec' && parts.length === 2) {
    const argv = parseArgv(q.get('argv'));
    const container = deps.operator.findContainer(q.get('target') ?? '', q.get('container') ?? undefined);
    const tty = q.get('tty') === '1';
    proc = await deps.operator.exec(container, {
      argv, tty, stdin: q.get('stdin') === '1', ...size,
      onOutput: (stream, d) => send(stream === 'stderr' ? FRAME.stderr : FRAME.stdout, d),
    });
    log.info({ container: container.id, sandbox: container.sandboxId, argv0: argv[0], tty }, 'operator exec started');
    onClientGone = () => void proc.kill().catch(() => undefined);
  } else {
    throw notFoundPath(url.pathname);
  }
  socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: podvisor-session\r\nconnection: upgrade\r\n\r\n');
  for (const frame of held!) socket.write(frame);
  held = undefined;
  let exited = false;
  const decoder = new FrameDecoder();
  // Stdin frames are written one at a time, in order.
  let writes = Promise.resolve();
  socket.on('data', (chunk: Buffer) => {
    let frames;
    try {
      frames = decoder.push(chunk);
    } catch (e) {
      send(FRAME.error, messageOf(e));
      socket.destroy();
      return;
    }
    for (const f of frames) {
      writes = writes.then(() => applyClientFrame(proc, f.type, f.payload)).catch((e) => log.debug({ err: messageOf(e) }, 'session input failed'));
    }
  });
  socket.on('close', () => {
    if (!exited) onClientGone();
  });
  const { exitCode } = await proc.exited;
  exited = true;
  send(FRAME.exit, JSON.stringify({ exitCode }));
  socket.end();
}

async function applyClientFrame(proc: InteractiveProcess, type: number, payload: Buffer): Promise<void> {
  if (type === FRAME.stdin) await proc.write(payload);
  else if (type === FRAME.closeStdin) await proc.closeStdin();
  else if (type === FRAME.resize) {
    const { rows, cols } = JSON.parse(payload.toString('utf8')) as { rows: number; cols: number };
    await proc.resize(rows, cols);
  }
}

function parseArgv(raw: string | null): string[] {
  let argv: unknown;
  try {
    argv = JSON.parse(raw ?? '');
  } catch {
    throw invalidArgument('exec needs argv: a JSON array of strings');
  }
  if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== 'string')) throw invalidArgument('exec needs argv: a non-empty JSON array of strings');
  return argv as string[];
}

function sendJson(res: ServerResponse, body: unknown): void {
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)));
}

function statusOf(e: unknown): number {
  return isPodvisorError(e) ? (HTTP_STATUS[(e as PodvisorError).code] ?? 500) : 500;
}

function sendError(res: ServerResponse, e: unknown): void {
  const status = statusOf(e);
  if (status === 500) log.error({ err: messageOf(e) }, 'admin request failed');
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ code: isPodvisorError(e) ? e.code : 'INTERNAL', message: messageOf(e) }));
}

function notFoundPath(path: string): PodvisorError {
  const e = invalidArgument(`the admin socket has no ${path}`);
  return e;
}
