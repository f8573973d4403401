import net from 'node:net';
import { logger } from '../src/log.js';

const log = logger('agent-runner');

/** Where stage2-init starts podvisor-runner (images/guest/command-runner.c). */
export const RUNNER_SOCKET = '/run/podvisor/runner.sock';
/** The runner's own bounds (command-runner.c): larger requests are refused before they are sent. */
const ARGV_MAX = 64 * 1024;
export const RUNNER_STDIN_MAX = 60 * 1024;
const OUT_MAX = 1024 * 1024;
const REPLY_HEAD = 16;

/** How a command ended, as the runner reports it. */
export type RunnerOutcome =
  | { kind: 'exited'; code: number; stdout: string; stderr: string }
  | { kind: 'signalled'; signal: number; stdout: string; stderr: string }
  | { kind: 'not-started'; errno: number };

let unreachableLogged = false;

/**
 * Runs one command through podvisor-runner. Under TCG a process the agent forks itself costs
 * it hundreds of milliseconds (Node's child_process code on first use, a fork of the whole
 * agent); the runner is a small static program that forks itself instead. Resolves undefined
 * when the runner does not answer (not started, or gone), so the caller starts the command itself.
 */
export function runThroughRunner(argv: string[], input = '', socketPath = RUNNER_SOCKET): Promise<RunnerOutcome | undefined> {
  const words = Buffer.from(argv.map((w) => `${w}\0`).join(''));
  const stdin = Buffer.from(input);
  if (argv.some((w) => w.includes('\0')) || words.length > ARGV_MAX || stdin.length > RUNNER_STDIN_MAX) return Promise.resolve(undefined);
  const head = Buffer.alloc(8);
  head.writeUInt32LE(words.length, 0);
  head.writeUInt32LE(stdin.length, 4);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let connected = false;
    const socket = net.connect(socketPath, () => {
      connected = true;
      socket.end(Buffer.concat([head, words, stdin]));
    });
    socket.on('data', (d: Buffer) => {
      received += d.length;
      // The runner keeps each output to OUT_MAX: more than that is not the runner talking.
      if (received > REPLY_HEAD + 2 * OUT_MAX) socket.destroy(new Error('the command runner sent more than its bound'));
      else chunks.push(d);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (connected) return reject(new Error(`the command runner failed while running ${argv[0]}: ${err.message}`));
      if (!unreachableLogged) log.warn({ err: err.message }, 'the command runner does not answer; the agent starts commands itself');
      unreachableLogged = true;
      resolve(undefined);
    });
    socket.on('close', (hadError) => {
      if (hadError) return;
      try {
        resolve(parseReply(Buffer.concat(chunks)));
      } catch (err) {
        reject(err);
      }
    });
  });
}

function parseReply(reply: Buffer): RunnerOutcome {
  if (reply.length < REPLY_HEAD) throw new Error(`the command runner ended its reply after ${reply.length} bytes`);
  const [kind, code, outLen, errLen] = [0, 4, 8, 12].map((at) => reply.readUInt32LE(at)) as [number, number, number, number];
  if (reply.length !== REPLY_HEAD + outLen + errLen) throw new Error('the command runner sent a reply of the wrong length');
  const stdout = reply.toString('utf8', REPLY_HEAD, REPLY_HEAD + outLen);
  const stderr = reply.toString('utf8', REPLY_HEAD + outLen);
  if (kind === 0) return { kind: 'exited', code, stdout, stderr };
  if (kind === 1) return { kind: 'signalled', signal: code, stdout, stderr };
  if (kind === 2) return { kind: 'not-started', errno: code };
  throw new Error(`the command runner sent an unknown reply kind ${kind}`);
}
