import { messageOf } from '../errors.js';
import { logger } from '../log.js';
import type { PortConnection } from './backend.js';
import type { InChannel, OutChannel } from './remote-command.js';
import { OutputFlow } from './output-flow.js';
import { SerialWriter } from './serial-writer.js';

const log = logger('streaming');

/** Bytes queued towards the client past which a forwarded connection is dropped (the guest did not hold back). */
const OUTPUT_HARD_LIMIT = 16 << 20;

/** One forwarded connection's channels on the client's transport (a SPDY stream pair or two WebSocket channels). */
export interface ForwardChannels {
  port: number;
  input: InChannel;
  output: OutChannel;
  error: OutChannel;
  queuedBytes(): number;
  onDrain(listener: () => void): () => void;
  pauseReading(paused: boolean): void;
  /** Called once if the client drops this connection (stream reset, transport closed). */
  onAbort(listener: () => void): void;
}

/**
 * Forwards one connection: dials the port in the pod (through the agent),
 * copies both ways with backpressure each way, passes half-closes on, and
 * reports a failure on the error channel as kubelet words it. Resolves when
 * both directions are done or the client dropped the connection.
 */
export async function forwardConnection(ch: ForwardChannels, dial: (onData: (data: Uint8Array) => void) => Promise<PortConnection>, label: string): Promise<void> {
  let aborted = false;
  let conn: PortConnection | undefined;
  const fail = (message: string) => {
    ch.error.write(Buffer.from(`error forwarding port ${ch.port} to pod ${label}: ${message}`));
    ch.error.end();
  };
  // The guest stops reading the pod's socket while the client is behind; a guest that
  // keeps sending anyway (or a client that stops reading for good) loses the connection.
  const flow = new OutputFlow(() => ch.queuedBytes(), async (paused) => conn?.pause(paused), {
    label,
    hardLimit: OUTPUT_HARD_LIMIT,
    onTooSlow: (queued) => {
      log.warn({ session: label, port: ch.port, queued }, 'forwarded connection: client too far behind; closing it');
      fail(`the client is more than ${OUTPUT_HARD_LIMIT} bytes behind`);
      conn?.close();
      ch.output.end();
    },
  });
  const offDrain = ch.onDrain(() => flow.check());
  const abortedPromise = new Promise<void>((resolve) => ch.onAbort(() => { aborted = true; conn?.close(); resolve(); }));

  try {
    conn = await dial((data) => {
      ch.output.write(data);
      if (conn) flow.check(); // until dial returns there is nothing to pause; checked right after
    });
  } catch (e) {
    fail(messageOf(e));
    ch.output.end();
    offDrain();
    flow.stop();
    return;
  }
  if (aborted) {
    conn.close();
    offDrain();
    flow.stop();
    return;
  }
  const opened = conn;
  flow.check();
  const toGuest = new SerialWriter(
    (data) => opened.write(data),
    () => opened.closeWrite(),
    (full) => ch.pauseReading(full),
    (message) => { fail(message); opened.close(); },
  );
  let clientDone!: () => void;
  const clientFinished = new Promise<void>((resolve) => { clientDone = resolve; });
  ch.input.on('data', (data: Buffer) => toGuest.push(data));
  ch.input.on('end', () => { toGuest.end(); clientDone(); });
  ch.input.start();
  const guestFinished = opened.ended.then(
    () => ch.output.end(),
    (e) => { fail(messageOf(e)); ch.output.end(); },
  );
  await Promise.race([Promise.all([guestFinished, clientFinished]), abortedPromise]);
  toGuest.stop();
  offDrain();
  flow.stop();
  if (aborted) opened.close();
  // As kubelet does, both streams end with the connection (the error stream empty when all went well).
  ch.error.end();
}
