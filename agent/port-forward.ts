import net from 'node:net';
import { failedPrecondition, invalidArgument, notFound, resourceExhausted, unavailable } from '../src/errors.js';
import type { ClosePortRequest, DialPortRequest, PausePortRequest, WritePortRequest } from '../src/agent-protocol/types.js';
import { logger } from '../src/log.js';
import type { ServerStream } from '../src/ttrpc/index.js';
import { checkId } from './validate.js';

const log = logger('agent-port-forward');

/** Open forwarded connections a host may hold at once; each is an fd in the guest. */
const MAX_CONNECTIONS = 1024;
const DIAL_TIMEOUT_MS = 10_000;

interface Forward {
  socket: net.Socket;
  /** The host asked us to stop reading (its client is slow). */
  hostPaused: boolean;
  /** The ttRPC connection's write buffer is full. */
  transportFull: boolean;
}

/**
 * Port-forward inside the guest: the host's DialPort opens a TCP connection to
 * 127.0.0.1:<port> in the VM (so forwarding needs no pod network the host can
 * reach) and streams what it reads back; WritePort/ClosePort/PausePort act on
 * it. A connection lives no longer than the host session that opened it.
 */
export class PortForwarder {
  private readonly forwards = new Map<string, Forward>();

  async dial(req: DialPortRequest, stream: ServerStream, encode: (data: Uint8Array) => Uint8Array): Promise<void> {
    const id = checkId('connection id', req.connectionId);
    if (!Number.isInteger(req.port) || req.port < 1 || req.port > 65535) throw invalidArgument(`port ${req.port} is not a TCP port`);
    if (this.forwards.has(id)) throw invalidArgument(`connection ${id} is already open`);
    if (this.forwards.size >= MAX_CONNECTIONS) throw resourceExhausted(`${MAX_CONNECTIONS} forwarded connections are open in this pod`);
    const socket = await connect(req.port);
    const fwd: Forward = { socket, hostPaused: false, transportFull: false };
    this.forwards.set(id, fwd);
    socket.once('close', () => this.forwards.delete(id));
    const flow = () => (fwd.hostPaused || fwd.transportFull ? socket.pause() : socket.resume());
    const offDrain = stream.onDrain(() => { fwd.transportFull = false; flow(); });
    // The host session ending (disconnect, new session) closes what it opened.
    void stream.whenClosed.then(() => socket.destroy());
    stream.send(encode(new Uint8Array()));
    try {
      await new Promise<void>((resolve, reject) => {
        socket.on('data', (data: Buffer) => {
          if (!stream.send(encode(data))) {
            fwd.transportFull = true;
            flow();
          }
        });
        // The pod side finished sending: end the stream (the host sees EOF); the
        // socket stays open for what the host still writes until it closes too.
        socket.on('end', resolve);
        socket.on('error', (err) => reject(unavailable(`connection to port ${req.port} in the pod: ${err.message}`)));
        socket.on('close', () => resolve());
      });
    } finally {
      offDrain();
    }
  }

  async write(req: WritePortRequest): Promise<void> {
    const { socket } = this.get(req.connectionId);
    if (socket.writableEnded || socket.destroyed) throw failedPrecondition(`connection ${req.connectionId} is closed for writing`);
    // Resolves once the data is handed to the kernel: the host sends the next piece only then.
    await new Promise<void>((resolve, reject) => socket.write(req.data, (err) => (err ? reject(unavailable(`writing to connection ${req.connectionId}: ${err.message}`)) : resolve())));
  }

  close(req: ClosePortRequest): void {
    const fwd = this.forwards.get(req.connectionId);
    if (!fwd) return; // closing twice is not an error
    if (req.writeOnly) fwd.socket.end();
    else fwd.socket.destroy();
  }

  pause(req: PausePortRequest): void {
    const fwd = this.get(req.connectionId);
    fwd.hostPaused = req.paused;
    if (fwd.hostPaused || fwd.transportFull) fwd.socket.pause();
    else fwd.socket.resume();
  }

  get open(): number {
    return this.forwards.size;
  }

  private get(id: string): Forward {
    const fwd = this.forwards.get(id);
    if (!fwd) throw notFound(`no forwarded connection ${JSON.stringify(id)}`);
    return fwd;
  }
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(unavailable(`connecting to port ${port} in the pod timed out after ${DIAL_TIMEOUT_MS} ms`));
    }, DIAL_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      log.debug({ port, err: err.message }, 'dial failed');
      reject(unavailable(`cannot connect to port ${port} in the pod: ${err.message}`));
    });
  });
}
