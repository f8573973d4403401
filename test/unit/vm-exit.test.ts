import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { runDirPaths } from '../../src/vm/run-dir.js';
import { classifyExit, type VmExitFacts } from '../../src/vm/vm-exit.js';

/** The one exit classification both VM backends use: which reason wins, and what the detail quotes. */
describe('VM exit classification', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pv-vm-exit-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const quiet = runDirPaths(join(dir, 'quiet'));
  const base: VmExitFacts = { panicked: false, stoppedByPodvisor: false, how: 'killed by SIGKILL' };

  it('a VM that ended with nothing said is a crash, in the backend\'s words', () => {
    assert.deepEqual(classifyExit(base, quiet), { reason: 'crashed', detail: 'QEMU ended without shutting down (killed by SIGKILL)' });
  });

  it('a stop by podvisor is "stopped", however QEMU went', () => {
    assert.deepEqual(classifyExit({ ...base, stoppedByPodvisor: true, how: 'libvirt destroyed the domain' }, quiet),
      { reason: 'stopped', detail: 'stopped by podvisor (libvirt destroyed the domain)' });
    assert.equal(classifyExit({ ...base, stoppedByPodvisor: true, shutdown: 'host-qmp-quit' }, quiet).detail, 'stopped by podvisor (host-qmp-quit)');
  });

  it('the guest\'s own shutdown and reboot', () => {
    assert.equal(classifyExit({ ...base, shutdown: 'guest-shutdown' }, quiet).reason, 'guest-shutdown');
    assert.equal(classifyExit({ ...base, shutdown: 'guest-reset' }, quiet).reason, 'guest-reboot');
    assert.deepEqual(classifyExit({ ...base, shutdown: 'host-signal' }, quiet), { reason: 'crashed', detail: 'QEMU shut down: host-signal' });
  });

  it('a panic or a fatal pause wins over a stop podvisor started for it', () => {
    const stopping = { ...base, stoppedByPodvisor: true };
    assert.equal(classifyExit({ ...stopping, fatalStatus: 'io-error' }, quiet).detail, 'QEMU paused the VM on an error (io-error)');
    assert.equal(classifyExit({ ...stopping, fatalStatus: 'io-error' }, quiet).reason, 'vm-error');
    assert.equal(classifyExit({ ...stopping, fatalStatus: 'guest-panicked' }, quiet).reason, 'guest-panic');
    assert.equal(classifyExit({ ...stopping, panicked: true }, quiet).detail, 'the guest kernel panicked (pvpanic)');
  });

  it('a reset after a panic on the console is a panic, quoting the panic line and QEMU\'s log', () => {
    const paths = runDirPaths(join(dir, 'panic'));
    mkdirSync(paths.dir);
    writeFileSync(paths.consoleLog, '[    1.234] Kernel panic - not syncing: Attempted to kill init!\n[    1.300] ---[ end Kernel panic ]---\n');
    writeFileSync(paths.qemuLog, 'qemu-system-x86_64: warning: something\n');
    const r = classifyExit({ ...base, shutdown: 'guest-reset' }, paths);
    assert.equal(r.reason, 'guest-panic');
    assert.match(r.detail, /^the guest kernel panicked; QEMU said: qemu-system-x86_64: warning: something; panic: Kernel panic - not syncing: Attempted to kill init!; console: /);
    // Without the panic on the console, the same reset is a reboot.
    assert.equal(classifyExit({ ...base, shutdown: 'guest-reset' }, quiet).reason, 'guest-reboot');
  });
});

