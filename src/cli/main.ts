import { criClient, type CriClient } from '../cri/client.js';
import { defaultAdminSocket } from '../config/listen-address.js';
import { isPodvisorError, messageOf } from '../errors.js';
import { configureLogging } from '../log.js';
import { AdminClient } from './admin-client.js';
import { CliError, EXIT, type CliCommand, type CliContext } from './cli-context.js';
import { check } from './commands/check.js';
import { consoleCommand } from './commands/console.js';
import { cp } from './commands/cp.js';
import { exec } from './commands/exec.js';
import { image } from './commands/image.js';
import { inspect } from './commands/inspect.js';
import { logs } from './commands/logs.js';
import { metrics } from './commands/metrics.js';
import { ps } from './commands/ps.js';
import { status, version } from './commands/runtime.js';

/** Subcommands, in the order --help lists them. */
export const COMMANDS: Record<string, CliCommand> = {
  ps, inspect, console: consoleCommand, exec, cp, logs, check, metrics, image, version, status,
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  return `Usage: podvisor [--socket PATH] [--admin-socket PATH] COMMAND [ARGS]

Operator CLI for podvisord. Every command takes --help. SANDBOX is an id prefix, namespace/name or
a pod name. Human tables by default, --json where a command has data.

Commands:
${Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(width)}  ${c.summary}`).join('\n')}

Global options:
  --socket PATH         podvisord's CRI socket (default /run/podvisor/podvisor.sock)
  --admin-socket PATH   podvisord's admin socket (default: next to the CRI socket, <name>-admin.sock)

Exit status: 0 ok, 1 failed (or check found the node not ready), 2 usage, 3 not found,
4 podvisord unreachable; exec and console return the remote command's status.
`;
}

/** Exit codes for daemon errors that arrive over the CRI (gRPC status codes). */
function exitForGrpc(code: number | undefined): number {
  if (code === 5) return EXIT.notFound;
  if (code === 3) return EXIT.usage;
  if (code === 14) return EXIT.unavailable;
  return EXIT.failed;
}

async function main(argv: string[]): Promise<number> {
  // `podvisor logs … | head`: a reader that went away is not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(EXIT.ok);
    throw e;
  });
  // The CLI's output is for people and scripts: logs go to stderr, and only warnings by default.
  configureLogging(process.env.PODVISOR_LOG_LEVEL ?? 'warn', process.stderr);
  let socket = '/run/podvisor/podvisor.sock';
  let adminSocket: string | undefined;
  let i = 0;
  for (; i < argv.length && argv[i]!.startsWith('-'); i++) {
    const a = argv[i]!;
    if (a === '-h' || a === '--help') {
      process.stdout.write(usage());
      return EXIT.ok;
    }
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = inline ?? argv[++i];
    if (value === undefined) throw new CliError(EXIT.usage, `${flag} needs a value\n\n${usage()}`);
    if (flag === '--socket') socket = value;
    else if (flag === '--admin-socket') adminSocket = value;
    else throw new CliError(EXIT.usage, `unknown option ${flag}\n\n${usage()}`);
  }
  const [name, ...args] = argv.slice(i);
  if (name === undefined) {
    process.stderr.write(usage());
    return EXIT.usage;
  }
  const command = COMMANDS[name];
  if (!command) throw new CliError(EXIT.usage, `unknown command "${name}"\n\n${usage()}`);
  let cri: CriClient | undefined;
  let admin: AdminClient | undefined;
  const ctx: CliContext = {
    args,
    criSocket: socket,
    adminSocket: adminSocket ?? defaultAdminSocket(socket),
    cri: () => (cri ??= criClient(socket)),
    admin: () => (admin ??= new AdminClient(ctx.adminSocket)),
    interactive: !!process.stdout.isTTY,
  };
  try {
    return await command.run(ctx);
  } finally {
    cri?.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    let code: number = EXIT.failed;
    let message = messageOf(e);
    if (e instanceof CliError) code = e.exitCode;
    else if (typeof (e as { code?: unknown }).code === 'number' && 'details' in (e as object)) {
      code = exitForGrpc((e as { code: number }).code);
      message = (e as { details: string }).details;
    } else if (isPodvisorError(e)) code = e.code === 'NOT_FOUND' ? EXIT.notFound : e.code === 'INVALID_ARGUMENT' ? EXIT.usage : EXIT.failed;
    process.stderr.write(`podvisor: ${message}\n`);
    process.exit(code);
  },
);
