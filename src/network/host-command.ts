import { spawn } from 'node:child_process';
import { failedPrecondition } from '../errors.js';

/** Output kept from a helper (ip, tc, a CNI plugin): plugins answer with small JSON documents. */
const MAX_OUTPUT_BYTES = 1 << 20;

export interface CommandOptions {
  /** Bytes written to the command's stdin (a CNI network config). */
  input?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a host helper with a deadline and bounded output; never throws for a
 * non-zero exit (the caller decides what that means), only when the command
 * cannot run at all or overruns its deadline.
 */
export function runCommand(file: string, args: string[], opts: CommandOptions = {}): Promise<CommandResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    const collect = (into: Buffer[]) => (d: Buffer) => {
      size += d.length;
      if (size <= MAX_OUTPUT_BYTES) into.push(d);
      else child.kill('SIGKILL');
    };
    child.stdout.on('data', collect(out));
    child.stderr.on('data', collect(err));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(failedPrecondition(`cannot run ${file}: ${e.message}`, e));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL' && size > MAX_OUTPUT_BYTES) return reject(failedPrecondition(`${file} wrote more than ${MAX_OUTPUT_BYTES} bytes`));
      if (signal) return reject(failedPrecondition(`${file} ${args.slice(0, 3).join(' ')} did not finish within ${timeoutMs} ms (killed by ${signal})`));
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.on('error', () => undefined); // a plugin that exits without reading its config
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs a helper that must succeed; its stderr becomes the error message. */
export async function mustRun(file: string, args: string[], what: string, opts: CommandOptions = {}): Promise<string> {
  const r = await runCommand(file, args, opts);
  if (r.code !== 0) throw failedPrecondition(`${what} failed: ${(r.stderr || r.stdout).trim() || `exit code ${r.code}`}`);
  return r.stdout;
}
