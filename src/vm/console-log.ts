import { closeSync, fstatSync, openSync, renameSync, writeSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { messageOf } from '../errors.js';
import { logger } from '../log.js';

/**
 * The guest's serial console, kept on the host within a cap. The console is guest-driven:
 * guest root can write to /dev/ttyS0 without end. QEMU serves it on a unix socket
 * (`-chardev socket,server=on,wait=off`) and podvisord reads that socket into a two-file
 * ring: `console.log` until it holds half the cap, then it becomes `console.log.1`
 * (replacing the older half) and a new `console.log` starts. At most `maxBytes` are on disk.
 *
 * Why a socket and not QEMU writing a file: a file QEMU writes has no size limit, and the
 * only cap on it (RLIMIT_FSIZE) kills QEMU. With the socket, when nobody reads (podvisord is
 * restarting) QEMU drops the output instead of blocking the guest or filling the disk; the
 * daemon that comes back connects again (Vm.reattach) and appends. What the guest printed in
 * between is lost, which is the price of a bound. When the daemon reads slower than the
 * guest writes, the socket fills and QEMU's serial device waits, slowing only that guest.
 */

const log = logger('vm-console');

export class ConsoleLog {
  private fd: number;
  private size: number;
  private closed = false;

  private constructor(
    private readonly socket: Socket,
    private readonly file: string,
    private readonly oldFile: string,
    private readonly maxBytes: number,
  ) {
    this.fd = openSync(file, 'a', 0o600);
    this.size = fstatSync(this.fd).size;
    socket.on('data', (chunk: Buffer) => this.append(chunk));
    socket.on('error', (e) => log.debug({ file, err: messageOf(e) }, 'console socket error'));
    socket.on('close', () => this.close());
  }

  /** Connects to QEMU's console socket; `file` is appended to (a reattached daemon continues it). */
  static connect(socketPath: string, file: string, oldFile: string, maxBytes: number, timeoutMs = 5000): Promise<ConsoleLog> {
    return new Promise((resolve, reject) => {
      const s = connect(socketPath);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`no answer on the console socket ${socketPath} within ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.off('error', onError);
        try {
          resolve(new ConsoleLog(s, file, oldFile, maxBytes));
        } catch (e) {
          s.destroy();
          reject(e);
        }
      });
      const onError = (e: Error) => {
        clearTimeout(timer);
        reject(e);
      };
      s.once('error', onError);
    });
  }

  /** Bytes now on disk in the current half. */
  get currentBytes(): number {
    return this.size;
  }

  private append(chunk: Buffer): void {
    if (this.closed) return;
    const half = Math.floor(this.maxBytes / 2);
    let at = 0;
    try {
      while (at < chunk.length) {
        if (this.size >= half) this.rotate();
        const n = Math.min(chunk.length - at, half - this.size);
        writeSync(this.fd, chunk, at, n);
        this.size += n;
        at += n;
      }
    } catch (e) {
      // A full disk must not take the daemon down; the console is best effort.
      log.warn({ file: this.file, err: messageOf(e) }, 'cannot write the console log; dropping console output');
      this.close();
    }
  }

  private rotate(): void {
    closeSync(this.fd);
    renameSync(this.file, this.oldFile);
    this.fd = openSync(this.file, 'a', 0o600);
    this.size = 0;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    try {
      closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}
