import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { getSystemErrorName } from 'node:util';
import { PodvisorError, type ErrorCode } from '../src/errors.js';
import { runThroughRunner, type RunnerOutcome } from './command-runner.js';

export interface RunResult {
  stdout: string;
  stderr: string;
}

/**
 * Runs a guest command to completion. A non-zero exit becomes a PodvisorError
 * (INTERNAL unless the caller says which code fits) carrying the command's
 * own error text, so the host sees why, e.g. "mount: mounting /dev/sdb ...".
 * The command is started by podvisor-runner (command-runner.ts: no fork of the
 * agent), or by the agent itself when the runner does not answer.
 */
export async function run(cmd: string, args: string[], options: { input?: string; code?: ErrorCode; what?: string } = {}): Promise<RunResult> {
  const outcome = await runThroughRunner([cmd, ...args], options.input) ?? await spawnHere(cmd, args, options.input);
  const fail = (why: string) => new PodvisorError(options.code ?? 'INTERNAL', why);
  if (outcome.kind === 'not-started') throw fail(`${options.what ?? cmd}: cannot run ${cmd}: ${getSystemErrorName(-outcome.errno)}`);
  if (outcome.kind === 'exited' && outcome.code === 0) return { stdout: outcome.stdout, stderr: outcome.stderr };
  const signal = outcome.kind === 'signalled' ? signalName(outcome.signal) : undefined;
  const why = outcome.stderr.trim() || outcome.stdout.trim() || (signal ? `killed by ${signal}` : `exit status ${outcome.kind === 'exited' ? outcome.code : '?'}`);
  throw fail(`${options.what ?? `${cmd} ${args.join(' ')}`}: ${why}`);
}

/** The same command started by the agent's own fork. */
function spawnHere(cmd: string, args: string[], input: string | undefined): Promise<RunnerOutcome> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', (err: NodeJS.ErrnoException) => resolve({ kind: 'not-started', errno: Math.abs(Number(err.errno) || constants.errno.ENOENT) }));
    child.on('close', (code, signal) => {
      if (signal) resolve({ kind: 'signalled', signal: constants.signals[signal], stdout, stderr });
      else resolve({ kind: 'exited', code: code ?? 0, stdout, stderr });
    });
    if (child.stdin) {
      // A command that exits without reading its input must not take the agent down with EPIPE.
      child.stdin.on('error', () => undefined);
      child.stdin.end(input);
    }
  });
}

function signalName(signal: number): string {
  return Object.entries(constants.signals).find(([, n]) => n === signal)?.[0] ?? `signal ${signal}`;
}

/** Quotes one word for `sh -c` (ids and paths are validated, but quote anyway). */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`;
}
