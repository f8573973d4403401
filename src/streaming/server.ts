import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { failedPrecondition, invalidArgument, messageOf } from '../errors.js';
import { logger } from '../log.js';
import type { StreamingBackend } from './backend.js';
import { forwardConnection } from './port-forward.js';
import { runRemoteCommand, type CommandTransport } from './remote-command.js';
import { SpdySession } from './spdy/session.js';
import { SPDY_COMMAND_PROTOCOLS, spdyCommandTransport, type StreamRequest } from './spdy-command.js';
import { SPDY_PORT_FORWARD_PROTOCOL, serveSpdyPortForward } from './spdy-port-forward.js';
import { TokenStore } from './tokens.js';
import { ChannelSocket, type ChannelFraming } from './ws-channels.js';

const log = logger('streaming');

export interface StreamingSettings {
  address: string;
  /** 0: a free port chosen at start. */
  port: number;
  tls?: { certFile: string; keyFile: string };
  /** A session with no traffic for this long is closed (kubelet's streamingConnectionIdleTimeout, 4 h by default). */
  idleTimeoutMs: number;
  /** How long a client may take to open its streams after the upgrade. */
  streamCreationTimeoutMs?: number;
  /** Connections served at once; more get 503. */
  maxSessions?: number;
}

type Prepared =
  | { kind: 'exec'; containerId: string; cmd: string[]; streams: StreamRequest }
  | { kind: 'attach'; containerId: string; streams: StreamRequest }
  | { kind: 'portforward'; sandboxId: string; ports: number[] };

/** WebSocket remote-command protocols: channel numbers stdin 0, stdout 1, stderr 2, error 3, resize 4. */
const WS_COMMAND_PROTOCOLS: Record<string, ChannelFraming & { jsonStatus: boolean }> = {
  'v5.channel.k8s.io': { base64: false, closeSignal: true, jsonStatus: true },
  'v4.channel.k8s.io': { base64: false, closeSignal: false, jsonStatus: true },
  'v4.base64.channel.k8s.io': { base64: true, closeSignal: false, jsonStatus: true },
  'channel.k8s.io': { base64: false, closeSignal: false, jsonStatus: false },
  'base64.channel.k8s.io': { base64: true, closeSignal: false, jsonStatus: false },
  '': { base64: false, closeSignal: false, jsonStatus: false },
};
/** WebSocket port-forward: per port i, channel 2i carries data and 2i+1 errors, each first sending the port (u16 LE). */
const WS_PORT_FORWARD_PROTOCOLS: Record<string, ChannelFraming> = {
  'v4.channel.k8s.io': { base64: false, closeSignal: false },
  'v4.base64.channel.k8s.io': { base64: true, closeSignal: false },
  '': { base64: false, closeSignal: false },
};

/**
 * podvisord's streaming server. Exec/Attach/PortForward calls prepare a
 * request and get back a one-time URL; kubelet (or crictl) connects to it and
 * upgrades to SPDY/3.1 or WebSocket, and the session runs on the pod's agent.
 */
export class StreamingServer {
  private readonly tokens = new TokenStore<Prepared>();
  private readonly server: http.Server;
  private readonly sockets = new Set<Socket>();
  private sessions = 0;
  private base = '';

  constructor(private readonly backend: StreamingBackend, private readonly settings: StreamingSettings) {
    if (settings.tls) {
      let cert: Buffer;
      let key: Buffer;
      try {
        cert = readFileSync(settings.tls.certFile);
        key = readFileSync(settings.tls.keyFile);
      } catch (e) {
        throw invalidArgument(`streaming TLS: ${messageOf(e)}`);
      }
      this.server = https.createServer({ cert, key });
    } else {
      this.server = http.createServer();
    }
    this.server.on('request', (req, res) => this.onPlainRequest(req, res));
    this.server.on('upgrade', (req, socket: Socket, head: Buffer) => this.onUpgrade(req, socket, head));
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    this.server.on('secureConnection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.settings.port, this.settings.address, () => {
        this.server.off('error', reject);
        resolve();
      });
    }).catch((e) => {
      throw failedPrecondition(`streaming server cannot listen on ${this.settings.address}:${this.settings.port}: ${messageOf(e)}`);
    });
    const { address, port } = this.server.address() as AddressInfo;
    const host = address.includes(':') ? `[${address}]` : address;
    this.base = `${this.settings.tls ? 'https' : 'http'}://${host}:${port}`;
    log.info({ url: this.base }, 'streaming server listening');
  }

  get url(): string {
    return this.base;
  }

  /** Stops listening and ends every session (the processes behind exec sessions are killed). */
  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ------------------------------------------------------------ preparing requests

  exec(req: { containerId: string; cmd: string[] } & StreamRequest): string {
    if (req.cmd.length === 0) throw invalidArgument('exec needs a command (cmd is empty)');
    validateStreams(req);
    const containerId = this.backend.checkContainer(req.containerId);
    return this.urlFor('exec', { kind: 'exec', containerId, cmd: req.cmd, streams: pickStreams(req) });
  }

  attach(req: { containerId: string } & StreamRequest): string {
    validateStreams(req);
    const containerId = this.backend.checkAttach(req.containerId, { stdin: req.stdin, tty: req.tty });
    return this.urlFor('attach', { kind: 'attach', containerId, streams: pickStreams(req) });
  }

  portForward(req: { sandboxId: string; ports: number[] }): string {
    for (const p of req.ports) if (!Number.isInteger(p) || p < 1 || p > 65535) throw invalidArgument(`port ${p} is not a TCP port`);
    const sandboxId = this.backend.checkSandbox(req.sandboxId);
    return this.urlFor('portforward', { kind: 'portforward', sandboxId, ports: req.ports });
  }

  private urlFor(kind: Prepared['kind'], prepared: Prepared): string {
    return `${this.base}/${kind}/${this.tokens.issue(prepared)}`;
  }

  // ------------------------------------------------------------ serving connections

  private onPlainRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const route = parseRoute(req.url);
    res.statusCode = route ? 400 : 404;
    res.setHeader('Content-Type', 'text/plain');
    res.end(route ? 'this endpoint needs a connection upgrade to SPDY/3.1 or WebSocket\n' : 'not found\n');
  }

  private onUpgrade(req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', (err) => log.debug({ err: err.message }, 'streaming connection error'));
    const route = parseRoute(req.url);
    const prepared = route ? this.tokens.take(route.token) : undefined;
    if (!route || !prepared || prepared.kind !== route.kind) {
      rejectUpgrade(socket, 404, 'unknown, used or expired streaming token');
      return;
    }
    if (this.sessions >= (this.settings.maxSessions ?? 256)) {
      rejectUpgrade(socket, 503, 'too many streaming sessions');
      return;
    }
    this.sessions++;
    socket.once('close', () => { this.sessions--; });
    socket.setNoDelay(true);
    socket.setTimeout(0);
    const upgrade = (req.headers.upgrade ?? '').toLowerCase();
    const run = upgrade === 'websocket' ? this.serveWebSocket(req, socket, head, prepared) : upgrade === 'spdy/3.1' ? this.serveSpdy(req, socket, head, prepared) : undefined;
    if (!run) {
      rejectUpgrade(socket, 400, `unsupported upgrade ${JSON.stringify(req.headers.upgrade ?? '')}; use SPDY/3.1 or websocket`);
      return;
    }
    run.catch((e) => {
      log.warn({ err: messageOf(e), kind: prepared.kind }, 'streaming session failed');
      socket.destroy();
    });
  }

  private async serveSpdy(req: http.IncomingMessage, socket: Socket, head: Buffer, prepared: Prepared): Promise<void> {
    const offered = headerList(req.headers['x-stream-protocol-version']);
    const supported = prepared.kind === 'portforward' ? [SPDY_PORT_FORWARD_PROTOCOL] : SPDY_COMMAND_PROTOCOLS;
    const protocol = offered.find((p) => supported.includes(p));
    if (!protocol) {
      rejectUpgrade(socket, 403, `unable to negotiate a protocol: client offers ${JSON.stringify(offered)}, server accepts ${JSON.stringify(supported)}`,
        supported.map((p) => `X-Accepted-Stream-Protocol-Versions: ${p}`));
      return;
    }
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: ${protocol}\r\n\r\n`);
    const session = new SpdySession(socket, { server: true, maxStreams: prepared.kind === 'portforward' ? 2048 : 8 });
    session.push(head);
    const timeoutMs = this.settings.streamCreationTimeoutMs ?? 30_000;
    if (prepared.kind === 'portforward') {
      await serveSpdyPortForward(session, (port, onData) => this.backend.dialPort(prepared.sandboxId, port, onData), {
        label: prepared.sandboxId, allowedPorts: prepared.ports, pairTimeoutMs: timeoutMs, idleTimeoutMs: this.settings.idleTimeoutMs,
      });
      return;
    }
    const transport = await spdyCommandTransport(session, prepared.streams, protocol, timeoutMs).catch((e) => {
      session.close('streams not set up');
      throw e;
    });
    await this.runCommand(transport, prepared);
  }

  private async serveWebSocket(req: http.IncomingMessage, socket: Socket, head: Buffer, prepared: Prepared): Promise<void> {
    const table = prepared.kind === 'portforward' ? WS_PORT_FORWARD_PROTOCOLS : WS_COMMAND_PROTOCOLS;
    const ws = await new Promise<WebSocket>((resolve) => {
      const wss = new WebSocketServer({
        noServer: true,
        maxPayload: 1 << 20,
        handleProtocols: (protocols) => [...protocols].find((p) => p in table) ?? false,
      });
      wss.handleUpgrade(req, socket, head, (ws) => resolve(ws));
    });
    const framing = table[ws.protocol] ?? table[''];
    const channels = new ChannelSocket(ws, socket, framing);
    if (prepared.kind === 'portforward') {
      await this.serveWebSocketPortForward(req, channels, prepared);
      return;
    }
    const s = prepared.streams;
    const transport: CommandTransport = {
      stdin: s.stdin ? channels.input(0) : undefined,
      stdout: s.stdout ? channels.output(1) : undefined,
      stderr: s.stderr ? channels.output(2) : undefined,
      error: channels.output(3),
      resize: s.tty ? channels.input(4) : undefined,
      jsonStatus: (WS_COMMAND_PROTOCOLS[ws.protocol] ?? WS_COMMAND_PROTOCOLS['']).jsonStatus,
      queuedBytes: () => channels.queuedBytes(),
      onDrain: (listener) => void channels.onDrain(listener),
      pauseReading: (paused) => channels.pauseReading(paused),
      close: () => channels.close(),
      onClose: (listener) => channels.onClose(listener),
    };
    await this.runCommand(transport, prepared);
  }

  private async serveWebSocketPortForward(req: http.IncomingMessage, channels: ChannelSocket, prepared: Extract<Prepared, { kind: 'portforward' }>): Promise<void> {
    const query = new URL(req.url ?? '/', 'http://x').searchParams.getAll('port').flatMap((v) => v.split(','));
    const ports = query.length ? query.map(Number) : prepared.ports;
    if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
      channels.output(1).write(Buffer.from('port-forward over WebSocket needs ports (query parameter "port" or the PortForward request)'));
      channels.close();
      return;
    }
    const forwards = ports.map((port, i) => {
      const portBytes = Buffer.alloc(2);
      portBytes.writeUInt16LE(port);
      channels.send(2 * i, portBytes);
      channels.send(2 * i + 1, portBytes);
      return forwardConnection({
        port,
        input: channels.input(2 * i),
        output: channels.output(2 * i),
        error: channels.output(2 * i + 1),
        queuedBytes: () => channels.queuedBytes(),
        onDrain: (listener) => channels.onDrain(listener),
        pauseReading: (paused) => channels.pauseReading(paused),
        onAbort: (listener) => channels.onClose(listener),
      }, (onData) => this.backend.dialPort(prepared.sandboxId, port, onData), prepared.sandboxId);
    });
    await Promise.all(forwards);
    channels.close();
  }

  private async runCommand(transport: CommandTransport, prepared: Extract<Prepared, { kind: 'exec' | 'attach' }>): Promise<void> {
    const limits = { idleTimeoutMs: this.settings.idleTimeoutMs };
    if (prepared.kind === 'exec') {
      const s = prepared.streams;
      await runRemoteCommand(transport, (sink) => this.backend.exec(prepared.containerId, { cmd: prepared.cmd, tty: s.tty, stdin: s.stdin }, sink),
        { cmd: prepared.cmd, label: `exec in ${prepared.containerId.slice(0, 12)}` }, limits);
    } else {
      const s = prepared.streams;
      await runRemoteCommand(transport, (sink) => this.backend.attach(prepared.containerId, { tty: s.tty, stdin: s.stdin }, sink),
        { cmd: [], label: `attach to ${prepared.containerId.slice(0, 12)}` }, limits);
    }
  }
}

function validateStreams(req: StreamRequest): void {
  if (req.tty && req.stderr) throw invalidArgument('tty and stderr cannot both be true (a terminal has one output stream)');
  if (!req.stdin && !req.stdout && !req.stderr) throw invalidArgument('one of stdin, stdout or stderr must be set');
}

function pickStreams(req: StreamRequest): StreamRequest {
  return { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, tty: req.tty };
}

function parseRoute(url: string | undefined): { kind: Prepared['kind']; token: string } | undefined {
  const m = /^\/(exec|attach|portforward)\/([A-Za-z0-9_-]{1,64})(?:\?.*)?$/.exec(url ?? '');
  return m ? { kind: m[1] as Prepared['kind'], token: m[2] } : undefined;
}

function headerList(value: string | string[] | undefined): string[] {
  const values = Array.isArray(value) ? value : value ? [value] : [];
  return values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
}

function rejectUpgrade(socket: Socket, status: number, message: string, extraHeaders: string[] = []): void {
  const body = `${message}\n`;
  socket.end([
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}`,
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...extraHeaders,
    '',
    body,
  ].join('\r\n'));
}
