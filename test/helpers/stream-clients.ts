import net from 'node:net';
import zlib from 'node:zlib';
import WebSocket from 'ws';
import { SPDY3_DICTIONARY } from '../../src/streaming/spdy/dictionary.js';
import { encodeHeaderPairs } from '../../src/streaming/spdy/header-block.js';
import { SpdySession, type SpdyStream } from '../../src/streaming/spdy/session.js';

/**
 * Clients for the streaming protocols, written for the tests: they speak the
 * wire protocols as kubectl/crictl do (an HTTP upgrade to SPDY/3.1 with
 * zlib-compressed headers against the SPDY/3 dictionary, streams named by
 * streamType; or WebSocket with Kubernetes' channel framing).
 */

/** SPDY header blocks compressed the way Go's spdy framer does: one zlib stream with the dictionary, sync-flushed per block. */
class ZlibHeaderWriter {
  private readonly deflate = zlib.createDeflate({ dictionary: SPDY3_DICTIONARY });

  encode(headers: Record<string, string | string[]>): Promise<Buffer> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      const onData = (c: Buffer) => chunks.push(c);
      this.deflate.on('data', onData);
      this.deflate.write(encodeHeaderPairs(headers));
      this.deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        this.deflate.off('data', onData);
        resolve(Buffer.concat(chunks));
      });
    });
  }

  close(): void {
    this.deflate.close();
  }
}

export interface UpgradeResult {
  status: number;
  headers: Record<string, string[]>;
  body: string;
  socket: net.Socket;
  rest: Buffer;
}

/** Sends an HTTP/1.1 upgrade request and reads the response head (and, if it is not a 101, the body). */
export function httpUpgrade(url: string, upgrade: string, extraHeaders: Array<[string, string]>): Promise<UpgradeResult> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(u.port), u.hostname.replace(/^\[|\]$/g, ''));
    let buffer = Buffer.alloc(0);
    socket.once('error', reject);
    socket.on('connect', () => {
      const lines = [`POST ${u.pathname}${u.search} HTTP/1.1`, `Host: ${u.host}`, 'Connection: Upgrade', `Upgrade: ${upgrade}`, 'Content-Length: 0'];
      for (const [k, v] of extraHeaders) lines.push(`${k}: ${v}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    });
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buffer.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(head[0].split(' ')[1]);
      const headers: Record<string, string[]> = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        const k = line.slice(0, i).trim().toLowerCase();
        (headers[k] ??= []).push(line.slice(i + 1).trim());
      }
      const rest = buffer.subarray(end + 4);
      if (status === 101) {
        socket.off('data', onData);
        socket.off('error', reject);
        resolve({ status, headers, body: '', socket, rest });
        return;
      }
      socket.off('data', onData);
      let body = rest.toString('utf8');
      socket.on('data', (d: Buffer) => { body += d.toString('utf8'); });
      socket.on('close', () => resolve({ status, headers, body, socket, rest: Buffer.alloc(0) }));
    };
    socket.on('data', onData);
  });
}

export interface SpdyClient {
  session: SpdySession;
  protocol: string;
  open(headers: Record<string, string>): Promise<SpdyStream>;
  close(): void;
}

/** Connects and upgrades to SPDY/3.1 offering `protocols`; rejects with the status and body when refused. */
export async function spdyConnect(url: string, protocols: string[]): Promise<SpdyClient> {
  const res = await httpUpgrade(url, 'SPDY/3.1', protocols.map((p) => ['X-Stream-Protocol-Version', p]));
  if (res.status !== 101) throw Object.assign(new Error(`upgrade refused: ${res.status} ${res.body.trim()}`), { status: res.status, body: res.body });
  const writer = new ZlibHeaderWriter();
  const session = new SpdySession(res.socket, { server: false, headerWriter: writer });
  session.push(res.rest);
  session.once('close', () => writer.close());
  return {
    session,
    protocol: res.headers['x-stream-protocol-version']?.[0] ?? '',
    open: (headers) => session.openStream(headers),
    close: () => session.destroy('test client closed'),
  };
}

/** Everything a stream receives until its end (or reset). */
export function collect(stream: SpdyStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  stream.on('data', (d) => chunks.push(d));
  return new Promise((resolve) => {
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('reset', () => resolve(Buffer.concat(chunks)));
  });
}

/** Settles when a stream ends or is reset. */
function ended(stream: SpdyStream): Promise<void> {
  return new Promise((resolve) => {
    stream.once('end', () => resolve());
    stream.once('reset', () => resolve());
  });
}

export interface CommandResult {
  stdout: Buffer;
  stderr: Buffer;
  /** What the error stream carried (a JSON Status on v4). */
  error: string;
  exitCode: number;
}

/** kubectl's reading of a v4 error stream: no status or Success is 0, NonZeroExitCode carries the code. */
export function exitCodeOf(error: string): number {
  if (!error) return 0;
  const status = JSON.parse(error) as { status: string; reason?: string; details?: { causes?: Array<{ reason?: string; message?: string }> } };
  if (status.status === 'Success') return 0;
  const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
  if (status.reason === 'NonZeroExitCode' && cause) return Number(cause.message);
  throw new Error(`remote command failed: ${error}`);
}

export interface SpdyCommandOptions {
  protocols?: string[];
  stdin?: Buffer | AsyncIterable<Buffer>;
  tty?: boolean;
  stderr?: boolean;
  /** Sizes to send on the resize stream (tty only), before stdin. */
  resizes?: Array<{ Width: number; Height: number }>;
  /** Called with the stdout stream as soon as it is open (interactive tests). */
  onStdout?: (data: Buffer) => void;
  /** false: stdout goes only to onStdout and is not kept (benchmarks of large outputs). */
  keepStdout?: boolean;
}

/** Runs a remote command over SPDY as client-go does: error stream first, then stdin/stdout/stderr/resize. */
export async function spdyCommand(url: string, opts: SpdyCommandOptions = {}): Promise<CommandResult> {
  const client = await spdyConnect(url, opts.protocols ?? ['v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io']);
  try {
    const error = await client.open({ streamtype: 'error' });
    error.end();
    const errorText = collect(error);
    const stdin = opts.stdin ? await client.open({ streamtype: 'stdin' }) : undefined;
    const stdout = await client.open({ streamtype: 'stdout' });
    stdout.end();
    if (opts.onStdout) stdout.on('data', opts.onStdout);
    const out = opts.keepStdout === false ? ended(stdout).then(() => Buffer.alloc(0)) : collect(stdout);
    let err: Promise<Buffer> = Promise.resolve(Buffer.alloc(0));
    if (opts.stderr !== false && !opts.tty) {
      const stderr = await client.open({ streamtype: 'stderr' });
      stderr.end();
      err = collect(stderr);
    }
    if (opts.tty && client.protocol !== 'v2.channel.k8s.io' && client.protocol !== 'channel.k8s.io') {
      const resize = await client.open({ streamtype: 'resize' });
      for (const size of opts.resizes ?? []) resize.write(Buffer.from(JSON.stringify(size)));
    }
    if (stdin && opts.stdin) {
      if (Buffer.isBuffer(opts.stdin)) stdin.write(opts.stdin);
      else for await (const chunk of opts.stdin) stdin.write(chunk);
      stdin.end();
    }
    const [stdoutBytes, stderrBytes, errorBytes] = await Promise.all([out, err, errorText]);
    const text = errorBytes.toString('utf8');
    return { stdout: stdoutBytes, stderr: stderrBytes, error: text, exitCode: client.protocol === 'v4.channel.k8s.io' ? exitCodeOf(text) : (text ? -1 : 0) };
  } finally {
    client.close();
  }
}

export interface WsCommandOptions {
  protocol?: string;
  stdin?: Buffer;
  tty?: boolean;
}

/** Runs a remote command over WebSocket with Kubernetes' channel framing (binary or base64). */
export function wsCommand(url: string, opts: WsCommandOptions = {}): Promise<CommandResult & { protocol: string }> {
  const protocol = opts.protocol ?? 'v5.channel.k8s.io';
  const base64 = protocol.includes('base64');
  const ws = new WebSocket(url.replace(/^http/, 'ws'), [protocol]);
  const out: Record<number, Buffer[]> = { 1: [], 2: [], 3: [] };
  const send = (channel: number, data: Buffer) => ws.send(base64 ? `${channel}${data.toString('base64')}` : Buffer.concat([Buffer.from([channel]), data]));
  return new Promise((resolve, reject) => {
    ws.on('open', () => {
      if (opts.stdin) {
        send(0, opts.stdin);
        if (protocol === 'v5.channel.k8s.io') ws.send(Buffer.from([255, 0])); // close stdin
      }
    });
    ws.on('message', (message: Buffer, isBinary: boolean) => {
      let channel: number;
      let data: Buffer;
      if (base64 && !isBinary) {
        const text = message.toString('latin1');
        channel = text.charCodeAt(0) - 0x30;
        data = Buffer.from(text.slice(1), 'base64');
      } else {
        channel = message[0];
        data = message.subarray(1);
      }
      out[channel]?.push(data);
    });
    ws.on('error', reject);
    ws.on('close', () => {
      const error = Buffer.concat(out[3]).toString('utf8');
      const jsonStatus = protocol.startsWith('v4') || protocol.startsWith('v5');
      resolve({ protocol: ws.protocol, stdout: Buffer.concat(out[1]), stderr: Buffer.concat(out[2]), error, exitCode: jsonStatus ? exitCodeOf(error) : (error ? -1 : 0) });
    });
  });
}

/** One forwarded connection over SPDY: sends `data`, half-closes, returns what came back and the error stream. */
export async function spdyForward(client: SpdyClient, port: number, requestId: string, data: Buffer): Promise<{ received: Buffer; error: string }> {
  const error = await client.open({ streamtype: 'error', port: String(port), requestid: requestId });
  error.end();
  const errorText = collect(error);
  const stream = await client.open({ streamtype: 'data', port: String(port), requestid: requestId });
  const received = collect(stream);
  stream.end(data);
  return { received: await received, error: (await errorText).toString('utf8') };
}

/** Port-forward over WebSocket (v4.channel.k8s.io framing): data on channel 0, errors on 1, each first carrying the port. */
export function wsForward(url: string, port: number, data: Buffer, opts: { protocol?: string; expectBytes: number }): Promise<{ received: Buffer; error: string; portHeaders: number[] }> {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}?port=${port}`, [opts.protocol ?? 'v4.channel.k8s.io']);
  const seen = new Map<number, Buffer[]>([[0, []], [1, []]]);
  const portHeaders: number[] = [];
  return new Promise((resolve, reject) => {
    let sent = false;
    const done = () => {
      const received = Buffer.concat(seen.get(0)!);
      resolve({ received, error: Buffer.concat(seen.get(1)!).toString('utf8'), portHeaders });
      ws.close();
    };
    ws.on('message', (message: Buffer) => {
      const channel = message[0];
      const payload = message.subarray(1);
      const list = seen.get(channel);
      if (!list) return;
      // The first message of each channel is the port number (u16 little-endian).
      if (portHeaders.length < 2 && list.length === 0 && payload.length === 2 && !portHeaders[channel]) {
        portHeaders[channel] = payload.readUInt16LE(0);
        if (!sent && portHeaders[0] && portHeaders[1]) {
          sent = true;
          ws.send(Buffer.concat([Buffer.from([0]), data]));
        }
        return;
      }
      list.push(payload);
      if (Buffer.concat(seen.get(0)!).length >= opts.expectBytes || channel === 1) done();
    });
    ws.on('error', reject);
    ws.on('close', () => resolve({ received: Buffer.concat(seen.get(0)!), error: Buffer.concat(seen.get(1)!).toString('utf8'), portHeaders }));
  });
}
