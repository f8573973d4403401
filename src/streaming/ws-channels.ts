import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { logger } from '../log.js';
import { HeldInput } from './held-input.js';
import type { OutChannel } from './remote-command.js';

const log = logger('streaming');

/** v5's channel id for "close the channel named in the next byte" (client to server: stdin is done). */
const CLOSE_SIGNAL = 255;

export interface ChannelFraming {
  /** base64 variants: text messages, channel as an ASCII digit, payload base64. */
  base64: boolean;
  /** v5: the client can close a channel (its stdin) with CLOSE_SIGNAL. */
  closeSignal: boolean;
}

/**
 * Kubernetes' channel protocol on a WebSocket: every message starts with its
 * channel number (one byte, or one ASCII digit in the base64 variants), the
 * rest is that channel's data. Inputs hold their bytes until the session
 * starts them. Flow control is the TCP socket's.
 */
export class ChannelSocket {
  private readonly inputs = new Map<number, HeldInput>();
  private closedReason: string | undefined;
  private readonly closeListeners: Array<(reason: string) => void> = [];

  constructor(private readonly ws: WebSocket, private readonly socket: Socket, private readonly framing: ChannelFraming) {
    ws.on('message', (message: Buffer, isBinary: boolean) => this.onMessage(message, isBinary));
    ws.on('close', (code: number) => this.closed(`client closed the WebSocket (${code})`));
    ws.on('error', (err: Error) => this.closed(`WebSocket error: ${err.message}`));
  }

  /** A channel the client writes on (stdin, resize, a forwarded connection). */
  input(channel: number): HeldInput {
    let input = this.inputs.get(channel);
    if (!input) this.inputs.set(channel, (input = new HeldInput((full) => this.pauseReading(full))));
    return input;
  }

  /** A channel we write on. */
  output(channel: number): OutChannel {
    return {
      write: (data) => this.send(channel, data),
      end: () => undefined, // channels end with the connection
    };
  }

  send(channel: number, data: Uint8Array): boolean {
    if (this.closedReason !== undefined) return false;
    if (this.framing.base64) this.ws.send(`${channel}${Buffer.from(data).toString('base64')}`);
    else this.ws.send(Buffer.concat([Buffer.from([channel]), data]));
    return this.socket.writableLength < 256 * 1024;
  }

  queuedBytes(): number {
    return this.ws.bufferedAmount;
  }

  onDrain(listener: () => void): () => void {
    this.socket.on('drain', listener);
    return () => this.socket.off('drain', listener);
  }

  pauseReading(paused: boolean): void {
    if (paused) this.socket.pause();
    else this.socket.resume();
  }

  close(): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(1000);
    // A client that never answers the close handshake is not waited for.
    setTimeout(() => this.ws.terminate(), 5000).unref();
  }

  onClose(listener: (reason: string) => void): void {
    if (this.closedReason !== undefined) queueMicrotask(() => listener(this.closedReason!));
    else this.closeListeners.push(listener);
  }

  private onMessage(message: Buffer, isBinary: boolean): void {
    let channel: number;
    let data: Buffer;
    if (this.framing.base64 && !isBinary) {
      const text = message.toString('latin1');
      if (text.length === 0) return;
      channel = text.charCodeAt(0) - 0x30;
      data = Buffer.from(text.slice(1), 'base64');
    } else {
      if (message.length === 0) return;
      channel = message[0];
      data = message.subarray(1);
    }
    if (this.framing.closeSignal && channel === CLOSE_SIGNAL) {
      if (data.length === 1) this.inputs.get(data[0])?.end();
      return;
    }
    const input = this.inputs.get(channel);
    if (!input) {
      log.debug({ channel }, 'data on a channel the client may not write: ignored');
      return;
    }
    if (data.length) input.push(data);
  }

  private closed(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    for (const input of this.inputs.values()) input.end();
    for (const listener of this.closeListeners.splice(0)) listener(reason);
  }
}
