import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { basename, dirname, posix, resolve } from 'node:path';
import { parseCommandArgs, usageError, CliError, EXIT, type CliCommand } from '../cli-context.js';
import { runSession } from '../session-client.js';
import { execIn } from './exec.js';

const USAGE = `Usage: podvisor cp [-c NAME] SRC DEST

Copies a file or directory between this node and a running container, as kubectl cp does: with tar
inside the container (the image must have tar, as busybox does) through an exec.
  podvisor cp ./config.yaml web:/etc/app        host file into the container directory /etc/app
  podvisor cp web:/var/log/app.log ./out        container file into the host directory ./out
One side is TARGET:PATH (TARGET: container id prefix, or sandbox with -c NAME); PATH is absolute.
DEST is a directory (made if missing); the copy keeps SRC's base name. The host side is unpacked
by GNU tar, which refuses absolute names and '..' in the archive.
`;

/** Splits "target:/path"; a local path (no colon, or one that exists) is undefined. */
function remote(spec: string): { target: string; path: string } | undefined {
  const i = spec.indexOf(':');
  if (i <= 0 || existsSync(spec)) return undefined;
  const path = spec.slice(i + 1);
  if (!path.startsWith('/')) throw new CliError(EXIT.usage, `container path in "${spec}" must be absolute`);
  return { target: spec.slice(0, i), path: posix.normalize(path) };
}

export const cp: CliCommand = {
  summary: 'copy files into or out of a container (tar through exec)',
  usage: USAGE,
  async run(ctx) {
    const args = parseCommandArgs(ctx, USAGE, { container: { type: 'string', short: 'c' } }, { min: 2, max: 2 });
    if (!args) return EXIT.ok;
    const [src, dest] = args.positionals as [string, string];
    const from = remote(src);
    const to = remote(dest);
    if ((from && to) || (!from && !to)) throw usageError('exactly one of SRC and DEST must be TARGET:PATH', USAGE);
    const container = args.values.container as string | undefined;
    if (to) {
      const local = resolve(src);
      if (!existsSync(local)) throw new CliError(EXIT.notFound, `${src} does not exist`);
      const socket = await execIn(ctx, to.target, container, ['sh', '-c', 'mkdir -p "$1" && tar -xf - -C "$1"', 'sh', to.path], { tty: false, stdin: true });
      // tar starts once the session is open and is read from the same tick: a child's pipe that
      // nobody reads when the child exits loses its data.
      const tar = spawn('tar', ['-cf', '-', '-C', dirname(local), basename(local)], { stdio: ['ignore', 'pipe', 'inherit'] });
      const code = await runSession(socket, { tty: false, stdin: true, input: tar.stdout! });
      return code === 0 ? EXIT.ok : fail(`tar in the container exited with ${code}`);
    }
    const local = resolve(dest);
    mkdirSync(local, { recursive: true });
    if (!statSync(local).isDirectory()) throw new CliError(EXIT.usage, `${dest} is not a directory`);
    const untar = spawn('tar', ['-xf', '-', '-C', local, '--no-same-owner'], { stdio: ['pipe', 'inherit', 'inherit'] });
    const untarDone = new Promise<number>((r) => untar.on('close', (c) => r(c ?? 1)));
    const socket = await execIn(ctx, from!.target, container, ['tar', '-cf', '-', '-C', posix.dirname(from!.path), posix.basename(from!.path)], { tty: false, stdin: false });
    const code = await runSession(socket, { tty: false, stdin: false, output: untar.stdin! });
    const untarCode = await untarDone;
    if (code !== 0) return fail(`tar in the container exited with ${code}`);
    return untarCode === 0 ? EXIT.ok : fail(`tar on the host exited with ${untarCode}`);
  },
};

function fail(message: string): number {
  process.stderr.write(`podvisor cp: ${message}\n`);
  return EXIT.failed;
}
