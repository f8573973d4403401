import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { failedPrecondition } from '../src/errors.js';
import { GUEST_POD_PID_NAMESPACE } from '../src/agent-protocol/guest-paths.js';
import { logger } from '../src/log.js';
import { run } from './run.js';

const log = logger('agent-pidns');

// PID 1 of the pod's namespace: waits on `sleep` forever, and every wait also
// reaps the orphans the kernel hands to a namespace init, so none linger as zombies.
const REAPER = 'while :; do sleep 2147483647; done';

let made: Promise<string> | undefined;

/** The pod's shared PID namespace, made once per VM on first use. */
export function ensurePodPidNamespace(): Promise<string> {
  made ??= makePodPidNamespace().catch((e) => {
    made = undefined;
    throw e;
  });
  return made;
}

async function makePodPidNamespace(): Promise<string> {
  const holder = spawn('unshare', ['--pid', '--fork', 'sh', '-c', REAPER], { stdio: 'ignore' });
  holder.on('exit', (code, signal) => log.error({ code, signal }, 'the pod PID namespace holder exited; containers in PID mode POD cannot start until the VM is replaced'));
  const unsharePid = holder.pid;
  if (!unsharePid) throw failedPrecondition('cannot start unshare for the pod PID namespace');
  const reaper = await firstChild(unsharePid);
  if (!existsSync(GUEST_POD_PID_NAMESPACE)) writeFileSync(GUEST_POD_PID_NAMESPACE, '');
  await run('mount', ['--bind', `/proc/${reaper}/ns/pid`, GUEST_POD_PID_NAMESPACE], { what: 'pinning the pod PID namespace' });
  log.info({ reaper }, 'pod PID namespace ready');
  return GUEST_POD_PID_NAMESPACE;
}

/** unshare --fork makes the namespace's first process as its child; wait for it to appear. */
async function firstChild(pid: number): Promise<number> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    try {
      const child = Number.parseInt(readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0] ?? '', 10);
      if (child > 0) return child;
    } catch {
      // not there yet, or unshare already failed: the deadline decides
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw failedPrecondition('the pod PID namespace holder did not start within 10 s');
}
