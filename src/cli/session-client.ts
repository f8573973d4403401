import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { FRAME, FrameDecoder, encodeFrame } from '../admin/frames.js';
import { CliError, EXIT } from './cli-context.js';

/** The terminal size to ask for, when stdout is a terminal. */
export function terminalSize(): { rows?: number; cols?: number } {
  return process.stdout.isTTY ? { rows: process.stdout.rows, cols: process.stdout.columns } : {};
}

/**
 * Connects this process's stdio to an interactive session on the admin socket:
 * stdin (raw when `tty` and stdin is a terminal) goes in, output comes out,
 * window changes are forwarded, and the remote exit code is returned.
 */
export function runSession(
  socket: Socket,
  opts: { tty: boolean; stdin: boolean; input?: Readable; output?: Writable },
): Promise<number> {
  return new Promise((resolve, reject) => {
    const stdin = (opts.input ?? process.stdin) as Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => void };
    const stdout = opts.output ?? process.stdout;
    const raw = opts.tty && !opts.input && !!stdin.isTTY;
    let exitCode: number | undefined;
    let error: string | undefined;
    const restore = () => {
      if (raw) stdin.setRawMode!(false);
      stdin.pause();
      stdin.removeListener('data', onInput);
      stdin.removeListener('end', onEnd);
      process.removeListener('SIGWINCH', onResize);
    };
    const onInput = (d: Buffer) => socket.write(encodeFrame(FRAME.stdin, d));
    const onEnd = () => socket.write(encodeFrame(FRAME.closeStdin));
    const onResize = () => {
      const { rows, cols } = terminalSize();
      if (rows && cols) socket.write(encodeFrame(FRAME.resize, JSON.stringify({ rows, cols })));
    };
    if (opts.stdin) {
      if (raw) stdin.setRawMode!(true);
      stdin.on('data', onInput);
      stdin.on('end', onEnd);
      stdin.resume();
    }
    if (opts.tty) process.on('SIGWINCH', onResize);
    const decoder = new FrameDecoder();
    socket.on('data', (chunk: Buffer) => {
      for (const f of decoder.push(chunk)) {
        if (f.type === FRAME.stdout) stdout.write(f.payload);
        else if (f.type === FRAME.stderr) process.stderr.write(f.payload);
        else if (f.type === FRAME.exit) exitCode = (JSON.parse(f.payload.toString('utf8')) as { exitCode: number }).exitCode;
        else if (f.type === FRAME.error) error = f.payload.toString('utf8');
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      restore();
      if (opts.output) opts.output.end();
      if (exitCode !== undefined) resolve(exitCode);
      else reject(new CliError(EXIT.failed, error ?? 'the session ended without an exit status (podvisord went away?)'));
    });
  });
}
