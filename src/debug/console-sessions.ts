import { randomBytes } from 'node:crypto';
import { failedPrecondition } from '../errors.js';
import { logger } from '../log.js';
import type { InteractiveProcess } from '../pod/interactive-process.js';
import type { OperatorAccess } from '../pod/operator-access.js';

const log = logger('debug-session');

/** Who opened a console: the admin socket (root on the node) or an SSH key. */
export interface ConsoleClient {
  via: 'cli' | 'ssh';
  /** SSH: the key's SHA256 fingerprint, as `ssh-keygen -lf` prints it. */
  fingerprint?: string;
  /** SSH: the remote address. */
  peer?: string;
}

export interface ConsoleSession {
  id: string;
  sandboxId: string;
  pod: string;
  process: InteractiveProcess;
  /** Ends the shell (the client went away) and logs the session's end if the shell has not already ended. */
  close(reason: string): Promise<void>;
}

/**
 * Guest consoles: an interactive shell in a sandbox VM itself, for the CLI's
 * `console` and the SSH gateway alike. Refused unless `[debug] enabled`; each
 * session is logged when it starts and when it ends, with who opened it.
 */
export class DebugConsoles {
  constructor(private readonly enabled: boolean, private readonly operator: OperatorAccess) {}

  async open(
    sandboxQuery: string,
    client: ConsoleClient,
    opts: { rows?: number; cols?: number; term?: string; onOutput: (data: Uint8Array) => void },
  ): Promise<ConsoleSession> {
    if (!this.enabled) {
      throw failedPrecondition('guest consoles are off: set [debug] enabled = true (with an authorized_keys_file) in podvisord\'s config');
    }
    const sandbox = this.operator.findSandbox(sandboxQuery);
    const pod = `${sandbox.config.metadata.namespace}/${sandbox.config.metadata.name}`;
    const id = randomBytes(6).toString('hex');
    const process = await this.operator.guestShell(sandbox, {
      ...(opts.rows ? { rows: opts.rows } : {}),
      ...(opts.cols ? { cols: opts.cols } : {}),
      ...(opts.term ? { term: opts.term } : {}),
      onOutput: (_stream, data) => opts.onOutput(data),
    });
    const start = new Date();
    const who = { via: client.via, ...(client.fingerprint ? { fingerprint: client.fingerprint } : {}), ...(client.peer ? { peer: client.peer } : {}) };
    log.info({ session: id, ...who, sandbox: sandbox.id, pod, start: start.toISOString() }, 'debug console session started');
    let ended = false;
    const end = (how: { exitCode?: number; reason?: string }) => {
      if (ended) return;
      ended = true;
      log.info({ session: id, ...who, sandbox: sandbox.id, pod, start: start.toISOString(), end: new Date().toISOString(), ...how }, 'debug console session ended');
    };
    void process.exited.then(({ exitCode }) => end({ exitCode }));
    return {
      id,
      sandboxId: sandbox.id,
      pod,
      process,
      async close(reason) {
        if (!ended) await process.kill().catch(() => undefined);
        end({ reason });
      },
    };
  }
}
