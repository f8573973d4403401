import { messageOf } from '../errors.js';
import { logger } from '../log.js';
import type { QmpClient } from './qmp-client.js';
import type { RunState } from './qmp-types.js';

/**
 * A VM that QEMU paused on its own never runs again: KVM's "internal error" (emulation
 * failure), a guest panic with the panic action "pause", a disk error under werror=stop,
 * a guest shutdown under -no-shutdown. QMP says so only as a bare STOP event; the state
 * comes from `query-status`. This watcher turns such a STOP into one call of `onFatal`,
 * so the VM is ended at once instead of waiting out the boot deadline.
 */

const log = logger('vm');

/** Run states after which the guest cannot continue by itself. */
export const FATAL_RUN_STATES: ReadonlySet<RunState> = new Set<RunState>(['internal-error', 'guest-panicked', 'io-error', 'shutdown']);

export function isFatalRunState(status: RunState): boolean {
  return FATAL_RUN_STATES.has(status);
}

/** Calls `onFatal` once, the first time a STOP leaves the VM in a fatal state. Returns an unsubscribe. */
export function watchFatalStop(qmp: QmpClient, onFatal: (status: RunState) => void): () => void {
  let fired = false;
  const fire = (status: RunState) => {
    if (fired) return;
    fired = true;
    onFatal(status);
  };
  const onEvent = (ev: { event: string; data: unknown }) => {
    if (fired) return;
    if (ev.event === 'GUEST_PANICKED' && (ev.data as { action?: string }).action === 'pause') return fire('guest-panicked');
    if (ev.event !== 'STOP') return;
    qmp.execute('query-status', undefined, { timeoutMs: 2000 }).then(
      (st) => {
        if (isFatalRunState(st.status)) fire(st.status);
      },
      (e) => log.debug({ err: messageOf(e) }, 'query-status after STOP failed'),
    );
  };
  qmp.on('event', onEvent);
  return () => qmp.off('event', onEvent);
}
