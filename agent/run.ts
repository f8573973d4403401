import { spawn } from 'node:child_process';
import { PodvisorError, type ErrorCode } from '../src/errors.js';

export interface RunResult {
  stdout: string;
  stderr: string;
}

/**
 * Runs a guest command to completion. A non-zero exit becomes a PodvisorError
 * (INTERNAL unless the caller says which code fits) carrying the command's
 * own error text, so the host sees why, e.g. "mount: mounting /dev/sdb ...".
 */
export function run(cmd: string, args: string[], options: { input?: string; code?: ErrorCode; what?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', (err) => reject(new PodvisorError(options.code ?? 'INTERNAL', `${options.what ?? cmd}: cannot run ${cmd}: ${err.message}`)));
    child.on('close', (code, signal) => {
      if (code === 0) resolve({ stdout, stderr });
      else {
        const why = stderr.trim() || stdout.trim() || (signal ? `killed by ${signal}` : `exit status ${code}`);
        reject(new PodvisorError(options.code ?? 'INTERNAL', `${options.what ?? `${cmd} ${args.join(' ')}`}: ${why}`));
      }
    });
    if (child.stdin) {
      // A command that exits without reading its input must not take the agent down with EPIPE.
      child.stdin.on('error', () => undefined);
      child.stdin.end(options.input);
    }
  });
}

/** Quotes one word for `sh -c` (ids and paths are validated, but quote anyway). */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`;
}
