import { parseArgs } from 'node:util';
import { criClient, unary, type CriClient } from '../cri/client.js';
import { messageOf } from '../errors.js';
import { configureLogging } from '../log.js';
import { imageCommand } from './image-import.js';

const USAGE = `Usage: podvisor [--socket PATH] COMMAND

Operator CLI for podvisord.

Commands:
  version    runtime name and versions
  status     runtime conditions and handlers
  image import ARCHIVE   load an OCI or docker archive into the image store (see podvisor image import --help)
`;

type Command = (client: CriClient, args: string[]) => Promise<void>;

/** Subcommands; later features register theirs here. */
export const COMMANDS: Record<string, Command> = {
  async version(client) {
    const v = await unary(client.runtime, 'Version', {});
    console.log(`${v.runtime_name} ${v.runtime_version} (CRI ${v.runtime_api_version})`);
  },
  async status(client) {
    const s = await unary(client.runtime, 'Status', { verbose: true });
    for (const c of s.status?.conditions ?? []) {
      console.log(`${c.type.padEnd(13)} ${c.status ? 'true ' : 'false'} ${c.reason}${c.message ? `: ${c.message}` : ''}`);
    }
    console.log(`handlers      ${s.runtime_handlers.map((h) => JSON.stringify(h.name)).join(', ')}`);
    const accel = s.info.accelerator ? (JSON.parse(s.info.accelerator) as { accel?: string; reason?: string; probing?: boolean }) : undefined;
    if (accel) console.log(`accelerator   ${accel.probing ? 'probing' : accel.accel}: ${accel.reason}`);
  },
  image: (_client, args) => imageCommand(args),
};

async function main(argv: string[]): Promise<number> {
  // The CLI's output is for people and scripts: logs go to stderr, and only warnings by default.
  configureLogging(process.env.PODVISOR_LOG_LEVEL ?? 'warn', process.stderr);
  // Global options come before the command; everything after it (options too) is the command's.
  let commandAt = 0;
  while (commandAt < argv.length && argv[commandAt]!.startsWith('-')) commandAt += argv[commandAt] === '--socket' ? 2 : 1;
  const { values } = parseArgs({
    args: argv.slice(0, commandAt),
    options: { socket: { type: 'string', default: '/run/podvisor/podvisor.sock' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
    strict: false,
  });
  const [name, ...rest] = argv.slice(commandAt);
  if (values.help || name === undefined) {
    process.stdout.write(USAGE);
    return name === undefined && !values.help ? 2 : 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`podvisor: unknown command "${name}"\n\n${USAGE}`);
    return 2;
  }
  const client = criClient(String(values.socket));
  try {
    await command(client, rest);
    return 0;
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`podvisor: ${(e as { details?: string }).details ?? messageOf(e)}\n`);
    process.exit(1);
  },
);
