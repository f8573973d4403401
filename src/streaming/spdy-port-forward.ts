import { logger } from '../log.js';
import type { PortConnection } from './backend.js';
import { HeldInput } from './held-input.js';
import { IdleTimer } from './idle-timer.js';
import { forwardConnection } from './port-forward.js';
import { RstStatus } from './spdy/frames.js';
import type { SpdySession, SpdyStream } from './spdy/session.js';

const log = logger('streaming');

export const SPDY_PORT_FORWARD_PROTOCOL = 'portforward.k8s.io';

interface Pair {
  data?: SpdyStream;
  error?: SpdyStream;
  input?: HeldInput;
  timer: NodeJS.Timeout;
}

/**
 * Port-forward over SPDY (`portforward.k8s.io`): the client opens an `error`
 * and a `data` stream per connection, both carrying the `port` and the same
 * `requestID`; once both are there the connection is dialled in the pod.
 * Ports outside `allowed` (when the CRI request named ports) are refused.
 * Resolves when the session closes.
 */
export function serveSpdyPortForward(
  session: SpdySession,
  dial: (port: number, onData: (data: Uint8Array) => void) => Promise<PortConnection>,
  opts: { label: string; allowedPorts: number[]; pairTimeoutMs: number; idleTimeoutMs: number },
): Promise<void> {
  const pairs = new Map<string, Pair>();
  const idle = new IdleTimer(opts.idleTimeoutMs, () => session.close('idle'));
  const touch = () => idle.touch();

  session.on('stream', (stream) => {
    touch();
    const type = stream.header('streamtype');
    const port = Number(stream.header('port'));
    // Old clients send no requestID: kubelet pairs an error stream with the data stream opened right after it.
    const requestId = stream.header('requestid') ?? String(type === 'data' ? stream.id - 2 : stream.id);
    if ((type !== 'data' && type !== 'error') || !Number.isInteger(port) || port < 1 || port > 65535) {
      stream.reset(RstStatus.RefusedStream);
      return;
    }
    let pair = pairs.get(requestId);
    if (!pair) {
      const timer = setTimeout(() => {
        log.debug({ requestId }, 'port-forward stream pair incomplete: dropping it');
        pairs.delete(requestId);
        pair?.data?.reset();
        pair?.error?.reset();
      }, opts.pairTimeoutMs);
      pair = { timer };
      pairs.set(requestId, pair);
    }
    if (pair[type]) {
      stream.reset(RstStatus.StreamInUse);
      return;
    }
    pair[type] = stream;
    if (type === 'data') {
      const input = new HeldInput((full) => session.pauseReading(full));
      stream.on('data', (d) => { touch(); input.push(d); });
      stream.on('end', () => input.end());
      pair.input = input;
    }
    if (!pair.data || !pair.error) return;
    clearTimeout(pair.timer);
    pairs.delete(requestId);
    const { data, error, input } = pair as Required<Pair>;
    if (opts.allowedPorts.length > 0 && !opts.allowedPorts.includes(port)) {
      error.end(Buffer.from(`port ${port} was not among the ports of this port-forward request (${opts.allowedPorts.join(', ')})`));
      data.end();
      return;
    }
    void forwardConnection({
      port,
      input,
      output: { write: (d) => { touch(); return data.write(d); }, end: () => data.end() },
      error,
      queuedBytes: () => session.queuedBytes(),
      onDrain: (listener) => { session.on('drain', listener); return () => session.off('drain', listener); },
      pauseReading: (paused) => session.pauseReading(paused),
      onAbort: (listener) => { data.once('reset', listener); },
    }, (onData) => dial(port, onData), opts.label);
  });

  return new Promise((resolve) => session.whenClosed(() => {
    idle.stop();
    for (const p of pairs.values()) clearTimeout(p.timer);
    resolve();
  }));
}
