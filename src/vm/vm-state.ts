import { chmodSync, createWriteStream, openSync, renameSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { deadlineExceeded, failedPrecondition, internal, messageOf } from '../errors.js';
import { logger } from '../log.js';
import { withDeadline } from './deadline.js';
import type { QmpClient } from './qmp-client.js';

/**
 * Saving a VM's device state to a file and loading it into a fresh QEMU: the two halves of
 * a VM template. With `x-ignore-shared`, RAM that lives in a shared file-backed backend is
 * not copied — the clone maps the template's RAM file privately — so the state file holds
 * only device state (tens of KiB).
 *
 * A clone reads its state from a descriptor it inherits as fd 3 (`migrate-incoming fd:3`):
 * QEMU 7.2 has no `file:` URI, `-sandbox spawn=deny` rules out `exec:`, and a confined QEMU
 * (its own uid after `-runas`) cannot reach a socket or file in podvisord's 0700
 * directories. A descriptor podvisord opens before the spawn needs none of that.
 */

const log = logger('vm-state');

/** The descriptor number QEMU finds its migration stream on. */
export const MIGRATION_FD = 3;
const URI = `fd:${MIGRATION_FD}`;
const IGNORE_SHARED = [{ capability: 'x-ignore-shared', state: true }];

/** Opens the saved state a clone's launch hands QEMU as fd 3. */
export function openStateForRestore(stateFile: string): number {
  try {
    return openSync(stateFile, 'r');
  } catch (e) {
    throw failedPrecondition(`the saved VM state ${stateFile} cannot be read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, e);
  }
}

/**
 * Pauses the VM and writes its device state to `stateFile`. The VM's RAM must be a
 * `memory-backend-file` with `share: true` (the template's RAM image), so it stays in that
 * file. The VM stays paused (`postmigrate`); stop it afterwards. A VM can be saved once.
 *
 * QEMU 7.2's outgoing `fd:` takes only a descriptor passed over QMP (SCM_RIGHTS, which Node
 * cannot send), so the save streams over a unix socket in the run directory that podvisord
 * listens on: only a QEMU that runs as root can reach it, i.e. a template VM, which runs
 * podvisor's own guest image with no tenant input (src/pod/vm-templates.ts).
 */
export async function saveVmState(qmp: QmpClient, opts: { id: string; socketPath: string; stateFile: string; timeoutMs?: number }): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  const tmp = `${opts.stateFile}.partial`;
  await qmp.execute('stop');
  await qmp.execute('migrate-set-capabilities', { capabilities: IGNORE_SHARED });
  rmSync(opts.socketPath, { force: true });
  let server: Server | undefined;
  try {
    const received = new Promise<void>((resolve, reject) => {
      server = createServer((conn: Socket) => {
        server!.close(); // one connection only
        pipeline(conn, createWriteStream(tmp, { mode: 0o600 })).then(resolve, reject);
      });
      server.on('error', reject);
      server.listen(opts.socketPath);
    });
    received.catch(() => undefined); // awaited below; a failed migrate must not leave it unhandled
    await new Promise<void>((resolve) => server!.once('listening', resolve));
    chmodSync(opts.socketPath, 0o600);
    await qmp.execute('migrate', { uri: `unix:${opts.socketPath}` });
    await waitMigration(qmp, deadline, 'saving');
    await withDeadline(received.catch((e: unknown) => {
      throw internal(`writing the VM state failed: ${messageOf(e)}`, e);
    }), Math.max(1, deadline - Date.now()), 'writing the VM state did not finish in time');
    renameSync(tmp, opts.stateFile);
    log.info({ sandbox: opts.id, stateFile: opts.stateFile }, 'VM state saved');
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  } finally {
    server?.close();
    rmSync(opts.socketPath, { force: true });
  }
}

/**
 * Loads the state on fd 3 into a VM launched to restore it (`-incoming defer`, the template's
 * RAM file mapped with `share: false`). The VM stays paused; the launch resumes it.
 */
export async function loadVmState(qmp: QmpClient, opts: { id: string; deadline: number }): Promise<void> {
  const status = (await qmp.execute('query-status')).status;
  if (status !== 'inmigrate') throw failedPrecondition(`VM ${opts.id} is ${status}; restoring state needs a VM launched to restore it`);
  await qmp.execute('migrate-set-capabilities', { capabilities: IGNORE_SHARED });
  await qmp.execute('migrate-incoming', { uri: URI });
  await waitMigration(qmp, opts.deadline, 'restoring');
}

async function waitMigration(qmp: QmpClient, deadline: number, what: string): Promise<void> {
  for (;;) {
    const info = await qmp.execute('query-migrate');
    if (info.status === 'completed') return;
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw internal(`${what} the VM state failed: ${info['error-desc'] ?? info.status}`);
    }
    if (Date.now() > deadline) throw deadlineExceeded(`${what} the VM state did not complete in time (status ${info.status ?? 'none'})`);
    await sleep(5);
  }
}
