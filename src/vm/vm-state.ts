import { createReadStream, createWriteStream, renameSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { deadlineExceeded, failedPrecondition, internal, messageOf } from '../errors.js';
import { logger } from '../log.js';
import { withDeadline } from './deadline.js';
import type { QmpClient } from './qmp-client.js';
import type { Vm } from './vm.js';

/**
 * Saving a VM's device state to a file and loading it into a fresh QEMU: the two halves of
 * a VM template. With `x-ignore-shared`, RAM that lives in a shared file-backed backend is
 * not copied — the clone maps the template's RAM file privately — so the state file holds
 * only device state (tens of KiB).
 *
 * QEMU 7.2 has no `file:` migration URI and `-sandbox spawn=deny` rules out `exec:`, so the
 * stream goes over a unix socket in the run directory and podvisord copies it to/from disk.
 */

const log = logger('vm-state');

const IGNORE_SHARED = [{ capability: 'x-ignore-shared', state: true }];

/**
 * Pauses the VM and writes its device state to `stateFile`. The VM's RAM must be a
 * `memory-backend-file` with `share: true` (the template's RAM image). The VM stays paused
 * (`postmigrate`); stop it afterwards.
 */
export async function saveVmState(vm: Vm, stateFile: string, opts: { timeoutMs?: number } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  const socketPath = vm.paths.migrationSocket;
  const tmp = `${stateFile}.partial`;
  await vm.qmp.execute('stop');
  await vm.qmp.execute('migrate-set-capabilities', { capabilities: IGNORE_SHARED });

  rmSync(socketPath, { force: true });
  let server: Server | undefined;
  try {
    const received = new Promise<void>((resolve, reject) => {
      server = createServer((conn: Socket) => {
        pipeline(conn, createWriteStream(tmp, { mode: 0o600 })).then(resolve, reject);
      });
      server.on('error', reject);
      server.listen(socketPath);
    });
    received.catch(() => undefined); // awaited below; a failed migrate must not leave it unhandled
    await new Promise<void>((resolve) => server!.once('listening', resolve));
    await vm.qmp.execute('migrate', { uri: `unix:${socketPath}` });
    await waitMigration(vm.qmp, deadline, 'saving');
    await relayed(received, deadline, 'writing the VM state');
    renameSync(tmp, stateFile);
    log.info({ sandbox: vm.id, stateFile }, 'VM state saved');
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  } finally {
    server?.close();
    rmSync(socketPath, { force: true });
  }
}

/**
 * Loads `stateFile` into a VM launched with `incomingDefer: true` and the template's RAM file
 * (`share: false`), then resumes it.
 */
export async function restoreVmState(vm: Vm, stateFile: string, opts: { timeoutMs?: number } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  const status = await vm.status();
  if (status !== 'inmigrate') {
    throw failedPrecondition(`VM ${vm.id} is ${status}; restoring state needs a VM launched with incomingDefer`);
  }
  const socketPath = vm.paths.migrationSocket;
  await vm.qmp.execute('migrate-set-capabilities', { capabilities: IGNORE_SHARED });
  try {
    await vm.qmp.execute('migrate-incoming', { uri: `unix:${socketPath}` });
    // QEMU hangs up as soon as it has read the end-of-state marker, which can be before our
    // side of the copy sees 'finish': the migration status, not the copy, says whether it worked.
    let copyError: unknown;
    const copy = pipeline(createReadStream(stateFile), connect(socketPath)).catch((e: unknown) => {
      copyError = e;
    });
    try {
      await waitMigration(vm.qmp, deadline, 'restoring');
    } catch (e) {
      throw copyError ? internal(`${messageOf(e)}; sending the state failed: ${messageOf(copyError)}`, e) : e;
    }
    await copy;
    await vm.qmp.execute('cont');
    log.info({ sandbox: vm.id, stateFile }, 'VM state restored');
  } finally {
    rmSync(socketPath, { force: true });
  }
}

async function waitMigration(qmp: QmpClient, deadline: number, what: string): Promise<void> {
  for (;;) {
    const info = await qmp.execute('query-migrate');
    if (info.status === 'completed') return;
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw internal(`${what} the VM state failed: ${info['error-desc'] ?? info.status}`);
    }
    if (Date.now() > deadline) throw deadlineExceeded(`${what} the VM state did not complete in time (status ${info.status ?? 'none'})`);
    await sleep(20);
  }
}

/** A stream copy with the operation's deadline; stream errors become INTERNAL with context. */
async function relayed(copy: Promise<void>, deadline: number, what: string): Promise<void> {
  const wrapped = copy.catch((e: unknown) => {
    throw internal(`${what} failed: ${messageOf(e)}`, e);
  });
  await withDeadline(wrapped, deadline - Date.now(), `${what} did not finish in time`);
}
