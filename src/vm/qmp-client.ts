import { EventEmitter } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { deadlineExceeded, PodvisorError, unavailable, messageOf } from '../errors.js';
import { logger } from '../log.js';
import type { ArgsOf, QmpCommand, QmpEvent, QmpEventName, QmpEvents, ReturnOf } from './qmp-types.js';

/**
 * A QMP client: JSON lines over QEMU's monitor socket. Replies are matched to requests by
 * id (not by order), each command has its own deadline, and events keep their data.
 */

const log = logger('qmp');

/** QEMU answered a command with an error object. */
export class QmpCommandError extends PodvisorError {
  constructor(
    readonly command: string,
    readonly qmpClass: string,
    readonly desc: string,
  ) {
    super('INTERNAL', `QMP ${command} failed: ${desc} (${qmpClass})`);
    this.name = 'QmpCommandError';
  }
}

interface Pending {
  command: string;
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export interface QmpConnectOptions {
  /** How long to keep retrying while the socket is not there yet or refuses. */
  timeoutMs?: number;
  /** Stops retrying (e.g. QEMU exited). */
  signal?: AbortSignal;
  /** Default deadline per command. */
  commandTimeoutMs?: number;
}

export interface QmpClientEvents {
  event: [QmpEvent];
  close: [];
}

export class QmpClient extends EventEmitter<QmpClientEvents> {
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private buffer = '';
  private closed = false;
  private greeting?: () => void;

  private constructor(
    private readonly socket: Socket,
    private readonly commandTimeoutMs: number,
  ) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (e) => log.debug({ err: messageOf(e) }, 'QMP socket error'));
    socket.on('close', () => this.onClose());
  }

  /** Connects, reads the greeting and leaves capabilities negotiation mode. */
  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    const commandTimeoutMs = opts.commandTimeoutMs ?? 10_000;
    for (;;) {
      opts.signal?.throwIfAborted();
      try {
        const socket = await openSocket(socketPath);
        const client = new QmpClient(socket, commandTimeoutMs);
        await client.handshake(Math.max(1, deadline - Date.now()));
        return client;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        const retryable = code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EAGAIN';
        if (!retryable || Date.now() >= deadline) {
          if (e instanceof PodvisorError) throw e;
          throw unavailable(`cannot connect to QMP at ${socketPath}: ${messageOf(e)}`, e);
        }
      }
      await sleep(20, undefined, { signal: opts.signal }).catch(() => undefined);
    }
  }

  private async handshake(timeoutMs: number): Promise<void> {
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(deadlineExceeded(`no QMP greeting within ${timeoutMs} ms`)), timeoutMs);
        this.greeting = () => {
          clearTimeout(timer);
          resolve();
        };
        this.socket.once('close', () => {
          clearTimeout(timer);
          reject(unavailable('QMP socket closed before the greeting'));
        });
      });
      await this.execute('qmp_capabilities', undefined, { timeoutMs });
    } catch (e) {
      this.close();
      throw e;
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs one command; rejects with QmpCommandError, or on timeout / closed connection. */
  execute<C extends QmpCommand>(command: C, args?: ArgsOf<C>, opts: { timeoutMs?: number } = {}): Promise<ReturnOf<C>> {
    if (this.closed) return Promise.reject(unavailable(`QMP connection is closed; cannot run ${command}`));
    const id = String(this.nextId++);
    const timeoutMs = opts.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<ReturnOf<C>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(deadlineExceeded(`QMP ${command} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) msg.arguments = args;
      this.socket.write(`${JSON.stringify(msg)}\n`);
    });
  }

  /**
   * Resolves with the first event `name` for which `match` holds. Register it before the
   * command that causes the event, so a fast event is not missed.
   */
  waitForEvent<E extends QmpEventName>(
    name: E,
    match: (data: QmpEvents[E]) => boolean = () => true,
    timeoutMs = this.commandTimeoutMs,
  ): Promise<QmpEvent<E>> {
    return new Promise((resolve, reject) => {
      const onEvent = (ev: QmpEvent) => {
        if (ev.event === name && match(ev.data as QmpEvents[E])) {
          done();
          resolve(ev as QmpEvent<E>);
        }
      };
      const onClose = () => {
        done();
        reject(unavailable(`QMP connection closed while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        done();
        reject(deadlineExceeded(`no QMP ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
      };
      if (this.closed) return onClose();
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  /**
   * Closes the connection and settles at once what waits on it (commands, event waiters and
   * their timers), rather than at the socket's later 'close': a caller letting go of a VM
   * leaves no timer behind it.
   */
  close(): void {
    if (this.closed) return;
    this.socket.destroy();
    this.onClose();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      log.warn({ line: line.slice(0, 200) }, 'QMP sent a line that is not JSON');
      return;
    }
    if ('QMP' in msg) {
      this.greeting?.();
      this.greeting = undefined;
      return;
    }
    if (typeof msg.event === 'string') {
      const ev = { event: msg.event, data: msg.data ?? {}, timestamp: msg.timestamp } as QmpEvent;
      log.debug({ event: ev.event, data: ev.data }, 'QMP event');
      this.emit('event', ev);
      return;
    }
    const id = msg.id === undefined ? undefined : String(msg.id);
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p || id === undefined) {
      log.debug({ id }, 'QMP reply for no pending request (timed out?)');
      return;
    }
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in msg) {
      const err = msg.error as { class?: string; desc?: string };
      p.reject(new QmpCommandError(p.command, err.class ?? 'GenericError', err.desc ?? 'unknown error'));
    } else {
      p.resolve(msg.return ?? {});
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      // `quit` is answered and then the socket closes; either way the command did its job.
      if (p.command === 'quit') p.resolve({});
      else p.reject(unavailable(`QMP connection closed before ${p.command} was answered`));
      this.pending.delete(id);
    }
    this.emit('close');
  }
}

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect(path);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}
