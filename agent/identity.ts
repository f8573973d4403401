import { spawn } from 'node:child_process';
import { PodvisorError } from '../src/errors.js';

/** The static helper hack/build-guest-image compiles from images/guest/identity.c. */
const HELPER = '/usr/lib/podvisor/podvisor-identity';
const HELPER_TIMEOUT_MS = 10_000;

/**
 * Makes this VM its own machine after it was cloned from a template: sets the wall clock to
 * the host's (the clone resumed at the template's save time) and reseeds the kernel CRNG
 * with the host's random bytes (the clone resumed with the template's key; this kernel has
 * no VM generation id to notice). Node can call neither clock_settime nor the random
 * ioctls, hence the helper. Nothing in the guest reads /proc/sys/kernel/random/boot_id
 * before this runs, so its first read afterwards draws from the new key.
 */
export function renewIdentity(clockUnixNanos: number, seed: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(HELPER, [BigInt(Math.round(clockUnixNanos)).toString()], { stdio: ['pipe', 'ignore', 'pipe'], timeout: HELPER_TIMEOUT_MS });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { if (stderr.length < 4096) stderr += d.toString(); });
    child.on('error', (err) => reject(new PodvisorError('INTERNAL', `renewing the guest identity: cannot run ${HELPER}: ${err.message}`)));
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new PodvisorError('INTERNAL', `renewing the guest identity: ${stderr.trim() || (signal ? `killed by ${signal}` : `exit status ${code}`)}`));
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(seed);
  });
}
