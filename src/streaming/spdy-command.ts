import { HeldInput } from './held-input.js';
import type { CommandTransport, OutChannel } from './remote-command.js';
import { RstStatus } from './spdy/frames.js';
import type { SpdySession, SpdyStream } from './spdy/session.js';

/** Remote-command protocols over SPDY, newest first (what kubelet's server offers). */
export const SPDY_COMMAND_PROTOCOLS = ['v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io'];

export interface StreamRequest {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
}

/**
 * Waits for the streams a remote-command client opens, each named by its
 * `streamType` header: always `error`; `stdin`, `stdout`, `stderr` as the
 * request asked (no stderr with a tty, whose output is one stream); `resize`
 * with a tty from v3 on. Resolves with the transport once all are there.
 */
export function spdyCommandTransport(session: SpdySession, req: StreamRequest, protocol: string, timeoutMs: number): Promise<CommandTransport> {
  const expected = new Set<string>(['error']);
  if (req.stdin) expected.add('stdin');
  if (req.stdout) expected.add('stdout');
  if (req.stderr && !req.tty) expected.add('stderr');
  if (req.tty && (protocol === 'v3.channel.k8s.io' || protocol === 'v4.channel.k8s.io')) expected.add('resize');
  const streams = new Map<string, SpdyStream>();
  const inputs = new Map<string, HeldInput>();

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      session.off('stream', onStream);
      reject(new Error(`the client opened ${[...streams.keys()].join(', ') || 'no streams'} of ${[...expected].join(', ')} within ${timeoutMs} ms`));
    }, timeoutMs);
    const onStream = (stream: SpdyStream) => {
      const type = stream.header('streamtype') ?? '';
      if (!expected.has(type) || streams.has(type)) {
        stream.reset(RstStatus.RefusedStream);
        return;
      }
      streams.set(type, stream);
      if (type === 'stdin' || type === 'resize') {
        const input = new HeldInput((full) => session.pauseReading(full));
        stream.on('data', (d) => input.push(d));
        stream.on('end', () => input.end());
        stream.on('reset', () => input.end());
        inputs.set(type, input);
      }
      if (streams.size < expected.size) return;
      clearTimeout(timer);
      session.off('stream', onStream);
      resolve({
        stdin: inputs.get('stdin'),
        resize: inputs.get('resize'),
        stdout: streams.get('stdout') as OutChannel | undefined,
        stderr: streams.get('stderr') as OutChannel | undefined,
        error: streams.get('error')!,
        jsonStatus: protocol === 'v4.channel.k8s.io',
        queuedBytes: () => session.queuedBytes(),
        onDrain: (listener) => session.on('drain', listener),
        pauseReading: (paused) => session.pauseReading(paused),
        close: () => session.close('session over'),
        onClose: (listener) => session.whenClosed(listener),
      });
    };
    session.on('stream', onStream);
    session.once('close', (reason) => {
      clearTimeout(timer);
      reject(new Error(`connection closed before the streams were set up: ${reason}`));
    });
  });
}
