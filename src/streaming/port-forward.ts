import { messageOf } from '../errors.js';
import { logger } from '../log.js';
import type { PortConnection } from './backend.js';
import type { InChannel, OutChannel } from './remote-command.js';
import { SerialWriter } from './serial-writer.js';

const log = logger('streaming');

/** Past this many queued bytes towards the client, the guest side stops being read. */
const OUTPUT_HIGH_WATER = 1 << 20;

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
  let guestPaused = false;
  let conn: PortConnection | undefined;
  const fail = (message: string) => {
    ch.error.write(Buffer.from(`error forwarding port ${ch.port} to pod ${label}: ${message}`));
    ch.error.end();
  };
  const outputFlow = () => {
    const want = ch.queuedBytes() > OUTPUT_HIGH_WATER;
    if (want === guestPaused || !conn) return;
    guestPaused = want;
    void conn.pause(want).catch((e) => log.debug({ err: messageOf(e) }, 'pause port'));
  };
  const offDrain = ch.onDrain(outputFlow);
  const abortedPromise = new Promise<void>((resolve) => ch.onAbort(() => { aborted = true; conn?.close(); resolve(); }));

  try {
    conn = await dial((data) => {
      ch.output.write(data);
      outputFlow();
    });
  } catch (e) {
    fail(messageOf(e));
    ch.output.end();
    offDrain();
    return;
  }
  if (aborted) {
    conn.close();
    offDrain();
    return;
  }
  const opened = conn;
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
  if (aborted) opened.close();
  // As kubelet does, both streams end with the connection (the error stream empty when all went well).
  ch.error.end();
}
