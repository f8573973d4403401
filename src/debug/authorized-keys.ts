import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import ssh2 from 'ssh2';
import { logger } from '../log.js';

const log = logger('debug-ssh');

export interface AuthorizedKey {
  algo: string;
  /** The public key blob (SSH wire format), what a client presents. */
  blob: Buffer;
  comment: string;
  verify(data: Buffer, signature: Buffer, hashAlgo?: string): boolean;
}

/** `SHA256:<base64, no padding>` of a public key blob, as `ssh-keygen -l` prints it. */
export function keyFingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/**
 * Reads an OpenSSH authorized_keys file. Read on every login attempt, so
 * removing a key takes effect at once. Lines with options (`from=`,
 * `command=`, …) are skipped, not honoured without them: this gateway cannot
 * apply those restrictions, so it grants nothing they would have limited.
 */
export function readAuthorizedKeys(file: string): AuthorizedKey[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    log.warn({ file, err: (e as Error).message }, 'cannot read the authorized_keys file: no key is accepted');
    return [];
  }
  const keys: AuthorizedKey[] = [];
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (!/^(ssh-|ecdsa-|sk-)/.test(line)) {
      log.warn({ file, line: i + 1 }, 'authorized_keys line has options or an unknown key type; skipped (options are not supported)');
      continue;
    }
    const parsed = ssh2.utils.parseKey(line);
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    if (!key || key instanceof Error) {
      log.warn({ file, line: i + 1, err: key instanceof Error ? key.message : 'no key' }, 'authorized_keys line is not a public key; skipped');
      continue;
    }
    keys.push({
      algo: key.type,
      blob: key.getPublicSSH(),
      comment: key.comment,
      verify: (data, signature, hashAlgo) => key.verify(data, signature, hashAlgo as never) === true,
    });
  }
  return keys;
}
