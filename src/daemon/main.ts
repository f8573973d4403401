import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, type PodvisorConfig } from '../config/config.js';
import { isPodvisorError, messageOf } from '../errors.js';
import { privateDir } from '../util/private-dir.js';
import { installExceptionPolicy } from './exception-policy.js';
import { configureLogging, logger } from '../log.js';
import { PODVISOR_VERSION } from '../version.js';
import { prepareSocketPath } from './socket.js';
import { startDaemon } from './daemon.js';

const USAGE = `Usage: podvisord [options]

Serves the Kubernetes CRI (runtime.v1) on a unix socket and runs every pod in its own QEMU VM.

Options:
  --config FILE      TOML configuration (default: built-in defaults)
  --listen PATH      CRI socket (default /run/podvisor/podvisor.sock)
  --root DIR         persistent data: images, disks (default /var/lib/podvisor)
  --state DIR        runtime state: sandboxes, sockets (default /run/podvisor)
  --log-level LEVEL  trace|debug|info|warn|error (default info)
  --version          print the version and exit
  -h, --help         print this help and exit
`;

async function main(): Promise<number> {
  let flags;
  try {
    flags = parseArgs({
      options: {
        config: { type: 'string' },
        listen: { type: 'string' },
        root: { type: 'string' },
        state: { type: 'string' },
        'log-level': { type: 'string' },
        version: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    process.stderr.write(`podvisord: ${messageOf(e)}\n\n${USAGE}`);
    return 2;
  }
  if (flags.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (flags.version) {
    process.stdout.write(`podvisord ${PODVISOR_VERSION}\n`);
    return 0;
  }

  let config: PodvisorConfig;
  try {
    config = loadConfig(flags.config, {
      listen: absolute(flags.listen),
      root: absolute(flags.root),
      state: absolute(flags.state),
      logLevel: flags['log-level'],
    });
  } catch (e) {
    process.stderr.write(`podvisord: ${messageOf(e)}\n`);
    return 2;
  }
  configureLogging(config.logLevel);
  const log = logger('daemon');

  installExceptionPolicy(log);
  try {
    privateDir(config.root);
    privateDir(config.state);
    await prepareSocketPath(config.listen);
  } catch (e) {
    process.stderr.write(`podvisord: ${messageOf(e)}\n`);
    return isPodvisorError(e, 'FAILED_PRECONDITION') ? 1 : 2;
  }

  const daemon = await startDaemon(config);
  log.info({ listen: config.listen, root: config.root, state: config.state, config: config.file ?? '(defaults)', version: PODVISOR_VERSION }, 'podvisord serving the CRI');

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'stopping: no new calls; waiting for calls in flight (VMs keep running)');
      daemon.stop().then(
        () => resolve(0),
        (e) => {
          log.error({ err: messageOf(e) }, 'stop failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

function absolute(path: string | undefined): string | undefined {
  return path === undefined ? undefined : resolve(path);
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`podvisord: ${messageOf(e)}\n`);
    process.exit(1);
  },
);
