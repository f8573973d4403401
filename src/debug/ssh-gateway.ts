import { timingSafeEqual } from 'node:crypto';
import ssh2 from 'ssh2';
import { invalidArgument, messageOf } from '../errors.js';
import { parseListenAddress } from '../config/listen-address.js';
import { logger } from '../log.js';
import { keyFingerprint, readAuthorizedKeys } from './authorized-keys.js';
import type { ConsoleSession, DebugConsoles } from './console-sessions.js';
import { loadOrCreateHostKey } from './host-key.js';

const log = logger('debug-ssh');
/** Unauthenticated connections get this long to log in; the gateway is reachable from the network. */
const LOGIN_GRACE_MS = 30_000;
/** Output a slow client has not taken yet; past it the session ends instead of growing podvisord's memory. */
const MAX_SESSION_BACKLOG = 8 * 1024 * 1024;

export interface SshGatewayOptions {
  listen: string;
  authorizedKeysFile: string;
  hostKeyFile: string;
  consoles: DebugConsoles;
}

/**
 * The SSH debug gateway: `ssh -p PORT <sandbox id prefix | namespace/name | pod
 * name>@node` opens a shell in that sandbox's VM (the guest console). Only
 * public keys listed in the authorized_keys file log in; passwords and
 * keyboard-interactive are never offered. Sessions are logged by DebugConsoles
 * with the key's fingerprint.
 */
export async function startSshGateway(opts: SshGatewayOptions): Promise<{ address: string; hostKeyFingerprint: string; close(): Promise<void> }> {
  const parsed = parseListenAddress(opts.listen);
  if (typeof parsed === 'string') throw invalidArgument(`[debug] ssh_listen ${parsed}`);
  const hostKey = await loadOrCreateHostKey(opts.hostKeyFile);
  const server = new ssh2.Server({ hostKeys: [hostKey.privateKey], ident: 'podvisor-debug' }, (client, info) => {
    const peer = `${info.ip}:${info.port}`;
    let fingerprint: string | undefined;
    let sandboxQuery = '';
    const grace = setTimeout(() => client.end(), LOGIN_GRACE_MS);
    client.on('error', (e) => log.debug({ peer, err: e.message }, 'ssh connection error'));
    client.on('close', () => clearTimeout(grace));
    client.on('authentication', (ctx) => {
      if (ctx.method !== 'publickey') {
        if (ctx.method !== 'none') log.warn({ peer, user: ctx.username, method: ctx.method }, 'ssh login refused: only public keys are accepted');
        ctx.reject(['publickey']);
        return;
      }
      const presented = ctx.key;
      const match = readAuthorizedKeys(opts.authorizedKeysFile).find((k) => k.algo === presented.algo && k.blob.length === presented.data.length && timingSafeEqual(k.blob, presented.data));
      const fp = keyFingerprint(presented.data);
      if (!match) {
        log.warn({ peer, user: ctx.username, fingerprint: fp }, 'ssh login refused: key not in authorized_keys');
        ctx.reject(['publickey']);
        return;
      }
      // Without a signature the client only asks whether the key would do; it signs next.
      if (!ctx.signature || !ctx.blob) {
        ctx.accept();
        return;
      }
      if (!match.verify(ctx.blob, ctx.signature, ctx.hashAlgo)) {
        log.warn({ peer, user: ctx.username, fingerprint: fp }, 'ssh login refused: bad signature');
        ctx.reject(['publickey']);
        return;
      }
      fingerprint = fp;
      sandboxQuery = ctx.username;
      log.info({ peer, user: ctx.username, fingerprint: fp, key: match.comment }, 'ssh login accepted');
      ctx.accept();
    });
    client.on('ready', () => {
      clearTimeout(grace);
      client.on('session', (acceptSession) => {
        const session = acceptSession();
        let pty: { rows: number; cols: number; term: string } | undefined;
        let open: ConsoleSession | undefined;
        session.on('pty', (accept, _reject, p) => {
          pty = { rows: p.rows, cols: p.cols, term: p.term };
          accept?.();
        });
        session.on('window-change', (accept, _reject, w) => {
          accept?.();
          void open?.process.resize(w.rows, w.cols).catch(() => undefined);
        });
        session.on('env', (accept) => accept?.());
        session.on('exec', (_accept, reject) => reject?.()); // a guest console is interactive only
        session.on('subsystem', (_accept, reject) => reject?.());
        session.on('shell', (accept) => {
          const stream = accept();
          stream.on('error', (e: Error) => log.debug({ peer, err: e.message }, 'ssh channel error'));
          opts.consoles.open(sandboxQuery, { via: 'ssh', fingerprint: fingerprint!, peer }, {
            ...(pty ? { rows: pty.rows, cols: pty.cols, term: pty.term } : {}),
            onOutput: (data) => {
              if (stream.writableLength > MAX_SESSION_BACKLOG) {
                void open?.close('the SSH client does not read its output');
                return;
              }
              stream.write(data);
            },
          }).then((s) => {
            open = s;
            stream.on('data', (d: Buffer) => void s.process.write(d).catch(() => undefined));
            stream.on('close', () => void s.close('the SSH client disconnected'));
            void s.process.exited.then(({ exitCode }) => {
              stream.exit(exitCode);
              stream.end();
            });
          }, (e) => {
            stream.stderr.write(`podvisor: ${messageOf(e)}\r\n`);
            stream.exit(1);
            stream.end();
          });
        });
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(parsed.port, parsed.host, () => resolve());
  });
  const addr = server.address() as { address: string; port: number; family: string };
  const address = `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  log.info({ address, hostKey: hostKey.fingerprint, authorizedKeys: opts.authorizedKeysFile }, 'SSH debug gateway listening');
  return {
    address,
    hostKeyFingerprint: hostKey.fingerprint,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
