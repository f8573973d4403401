import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import ssh2 from 'ssh2';
import { failedPrecondition } from '../errors.js';
import { logger } from '../log.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { keyFingerprint } from './authorized-keys.js';

const log = logger('debug-ssh');

/**
 * The SSH gateway's host key: generated (ed25519) on the first start and kept,
 * so clients' known_hosts entries stay valid across restarts. The private key
 * is 0600 in a 0700 directory; the public half sits next to it as `.pub`.
 */
export async function loadOrCreateHostKey(file: string): Promise<{ privateKey: string; fingerprint: string }> {
  if (!existsSync(file)) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'podvisor debug gateway' });
    await writeFileAtomic(file, pair.private, 0o600);
    await writeFileAtomic(`${file}.pub`, `${pair.public}\n`, 0o644);
    log.info({ file }, 'generated the SSH gateway host key');
  }
  chmodSync(file, 0o600);
  const privateKey = readFileSync(file, 'utf8');
  const parsed = ssh2.utils.parseKey(privateKey);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || key instanceof Error) throw failedPrecondition(`SSH host key ${file} is not a private key${key instanceof Error ? `: ${key.message}` : ''}`);
  return { privateKey, fingerprint: keyFingerprint(key.getPublicSSH()) };
}
