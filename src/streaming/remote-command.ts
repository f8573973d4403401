import type { EventEmitter } from 'node:events';
import { messageOf } from '../errors.js';
import { logger } from '../log.js';
import type { ProcessIo, ProcessSink } from './backend.js';
import { IdleTimer } from './idle-timer.js';
import { OutputFlow } from './output-flow.js';
import { SerialWriter } from './serial-writer.js';
import { errorStatus, exitCodeMessage, exitCodeStatus, successStatus } from './status.js';

const log = logger('streaming');

/** An input channel from the client: 'data' chunks, then 'end'. */
export interface InChannel extends EventEmitter<{ data: [Buffer]; end: [] }> {
  /** Delivers what arrived before the listeners were attached, then everything as it comes. */
  start(): void;
}
/** An output channel to the client. */
export interface OutChannel {
  write(data: Uint8Array): boolean;
  end(): void;
}

/**
 * A remote-command connection once its protocol is settled (SPDY streams or
 * WebSocket channels): the streams the client opened and the connection's
 * flow control. Closing ends the connection after what is queued is written.
 */
export interface CommandTransport {
  stdin?: InChannel;
  stdout?: OutChannel;
  stderr?: OutChannel;
  error: OutChannel;
  resize?: InChannel;
  /** v4 and later: the error stream carries a JSON Status; earlier: a plain message. */
  jsonStatus: boolean;
  /** Bytes queued towards the client. */
  queuedBytes(): number;
  onDrain(listener: () => void): void;
  /** Stop reading from the client (its stdin outruns the guest). */
  pauseReading(paused: boolean): void;
  close(): void;
  /** Called once when the client goes away or the connection fails. */
  onClose(listener: (reason: string) => void): void;
}

export interface SessionLimits {
  /** No byte in either direction for this long ends the session. */
  idleTimeoutMs: number;
}

/** Past this many, the client is too slow to keep (attach cannot hold the container's output back). */
const OUTPUT_HARD_LIMIT = 16 << 20;
/** A resize stream that sends this much without a complete size is broken. */
const MAX_RESIZE_BUFFER = 4096;

/**
 * Runs one exec or attach session on a transport: output to stdout/stderr
 * (held back in the guest while the client is slow), stdin to the guest in
 * order (the client is not read while the guest lags), resize events, then
 * the exit status on the error stream and the connection closed. A client
 * that goes away releases the process (an exec is killed, an attach detaches).
 */
export async function runRemoteCommand(
  transport: CommandTransport,
  start: (sink: ProcessSink) => Promise<ProcessIo>,
  what: { cmd: string[]; label: string },
  limits: SessionLimits,
): Promise<void> {
  let io: ProcessIo | undefined;
  let closedReason: string | undefined;

  const finished = new Promise<string>((resolve) => transport.onClose((reason) => { closedReason = reason; resolve(reason); }));
  const idle = new IdleTimer(limits.idleTimeoutMs, () => {
    log.info({ session: what.label, idleMs: limits.idleTimeoutMs }, 'streaming session idle: closing');
    transport.close();
  });
  const touch = () => idle.touch();

  const flow = new OutputFlow(() => transport.queuedBytes(), async (paused) => io?.pauseOutput(paused), {
    label: what.label,
    hardLimit: OUTPUT_HARD_LIMIT,
    onTooSlow: (queued) => {
      log.warn({ session: what.label, queued }, 'client reads too slowly: closing the session');
      transport.close();
    },
  });
  transport.onDrain(() => flow.check());

  const sink: ProcessSink = {
    output(stream, data) {
      touch();
      const out = stream === 'stderr' ? (transport.stderr ?? transport.stdout) : transport.stdout;
      if (!out || closedReason !== undefined) return;
      out.write(data);
      flow.check();
    },
  };

  let stdin: SerialWriter | undefined;
  transport.stdin?.on('data', (data: Buffer) => {
    touch();
    stdin?.push(data);
  });
  transport.stdin?.on('end', () => stdin?.end());

  let resizeBuffer = '';
  const resizes: Array<{ rows: number; cols: number }> = [];
  let resizing = false;
  const applyResizes = async () => {
    if (resizing || !io) return;
    resizing = true;
    while (resizes.length > 0) {
      const size = resizes.pop()!; // only the latest size matters
      resizes.length = 0;
      await io.resize(size).catch((e) => log.debug({ err: messageOf(e) }, 'resize failed'));
    }
    resizing = false;
  };
  transport.resize?.on('data', (data: Buffer) => {
    touch();
    resizeBuffer += data.toString('utf8');
    const { values, rest } = jsonObjects(resizeBuffer);
    resizeBuffer = rest;
    for (const value of values) {
      const size = value as { Width?: unknown; Height?: unknown };
      const cols = Number(size.Width);
      const rows = Number(size.Height);
      if (Number.isInteger(rows) && Number.isInteger(cols) && rows > 0 && cols > 0) resizes.push({ rows, cols });
    }
    if (resizeBuffer.length > MAX_RESIZE_BUFFER) resizeBuffer = '';
    void applyResizes();
  });

  try {
    io = await start(sink);
  } catch (e) {
    writeStatus(transport, 'error', messageOf(e), what.cmd);
    transport.close();
    idle.stop();
    return;
  }
  const running = io;
  stdin = new SerialWriter(
    (data) => running.writeStdin(data),
    () => running.closeStdin(),
    (full) => transport.pauseReading(full),
    // The process closed its stdin or ended: what the client still sends goes nowhere, as with a pipe.
    (message) => log.debug({ session: what.label, err: message }, 'stdin write failed'),
  );
  transport.stdin?.start();
  transport.resize?.start();

  const outcome = await Promise.race([
    io.exited.then((code) => ({ code }), (e) => ({ failure: messageOf(e) })),
    finished.then((reason) => ({ reason })),
  ]);
  idle.stop();
  flow.stop();
  if ('failure' in outcome) {
    writeStatus(transport, 'error', outcome.failure, what.cmd);
    transport.close();
    log.warn({ session: what.label, err: outcome.failure }, 'streaming session failed');
  } else if ('code' in outcome) {
    transport.stdout?.end();
    transport.stderr?.end();
    if (outcome.code === 0) writeStatus(transport, 'success', '', what.cmd);
    else writeStatus(transport, 'exit', String(outcome.code), what.cmd);
    transport.close();
    log.info({ session: what.label, exitCode: outcome.code }, 'streaming session ended');
  } else {
    log.info({ session: what.label, reason: outcome.reason }, 'client left the streaming session');
    transport.close();
  }
  stdin.stop();
  await io.release().catch((e) => log.debug({ err: messageOf(e) }, 'release'));
}

function writeStatus(t: CommandTransport, kind: 'success' | 'exit' | 'error', detail: string, cmd: string[]): void {
  if (t.jsonStatus) {
    const json = kind === 'success' ? successStatus() : kind === 'exit' ? exitCodeStatus(cmd, Number(detail)) : errorStatus(detail);
    t.error.write(Buffer.from(json));
  } else if (kind !== 'success') {
    t.error.write(Buffer.from(kind === 'exit' ? exitCodeMessage(cmd, Number(detail)) : detail));
  }
  t.error.end();
}

/** Complete JSON objects at the start of `text` (the resize stream is a sequence of them), and what is left over. */
function jsonObjects(text: string): { values: unknown[]; rest: string } {
  const values: unknown[] = [];
  let rest = text;
  for (;;) {
    const start = rest.indexOf('{');
    const end = start < 0 ? -1 : rest.indexOf('}', start);
    if (end < 0) return { values, rest };
    const candidate = rest.slice(start, end + 1);
    rest = rest.slice(end + 1);
    try {
      values.push(JSON.parse(candidate));
    } catch {
      // not a size object: skip it
    }
  }
}
