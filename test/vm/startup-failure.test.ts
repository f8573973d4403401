import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Vm } from '../../src/vm/vm.js';
import { guestProfile, qemuProcessesUsing, scratchRoot } from '../helpers/vm.js';

/** A VM that cannot start says why and leaves nothing: no process, socket or file. */

const root = scratchRoot('fail');

function assertNothingLeft(runDir: string): void {
  assert.deepEqual(qemuProcessesUsing(runDir), [], 'no QEMU process');
  assert.equal(existsSync(runDir), false, `run directory ${runDir} is gone`);
}

describe('VM start-up failures', () => {
  after(() => root.remove());

  it('refuses a kernel path that does not exist, before starting anything', async () => {
    const runDir = join(root.dir, 'missing');
    await assert.rejects(
      Vm.launch({ id: 'fail-missing', profile: guestProfile({ kernel: '/nonexistent/vmlinux' }), runDir }),
      { code: 'INVALID_ARGUMENT', message: /kernel \/nonexistent\/vmlinux cannot be read: ENOENT/ },
    );
    assertNothingLeft(runDir);
  });

  it('reports QEMU refusing a file that is not a kernel, with QEMU\'s own words', async () => {
    const bogus = join(root.dir, 'not-a-kernel');
    writeFileSync(bogus, 'this is not an ELF or bzImage\n'.repeat(100));
    const runDir = join(root.dir, 'bogus');
    await assert.rejects(
      Vm.launch({ id: 'fail-bogus', profile: guestProfile({ kernel: bogus }), runDir }),
      (e: Error & { code?: string }) => {
        assert.equal(e.code, 'FAILED_PRECONDITION');
        assert.match(e.message, /VM fail-bogus failed to start: QEMU exited during start-up \(exit code 1\): .*kernel/);
        return true;
      },
    );
    assertNothingLeft(runDir);
  });

  it('reports a QEMU binary that does not exist', async () => {
    const runDir = join(root.dir, 'nobinary');
    await assert.rejects(
      Vm.launch({ id: 'fail-nobinary', profile: guestProfile({ qemuBinary: '/nonexistent/qemu-system-x86_64' }), runDir }),
      { code: 'FAILED_PRECONDITION', message: /cannot run \/nonexistent\/qemu-system-x86_64: .*ENOENT/ },
    );
    assertNothingLeft(runDir);
  });

  it('keeps an existing run directory and its other files, removing only what the launch made', async () => {
    const runDir = join(root.dir, 'existing');
    mkdirSync(runDir);
    writeFileSync(join(runDir, 'keep.me'), 'x');
    await assert.rejects(
      Vm.launch({ id: 'fail-existing', profile: guestProfile({ kernel: join(root.dir, 'not-a-kernel') }), runDir }),
      { code: 'FAILED_PRECONDITION' },
    );
    assert.deepEqual(readdirSync(runDir), ['keep.me']);
    assert.deepEqual(qemuProcessesUsing(runDir), []);
  });

  it('rejects an id that is unsafe in a QEMU option or a process name', async () => {
    const runDir = join(root.dir, 'badid');
    await assert.rejects(Vm.launch({ id: 'a,b', profile: guestProfile(), runDir }), { code: 'INVALID_ARGUMENT', message: /VM id/ });
    await assert.rejects(Vm.launch({ id: '', profile: guestProfile(), runDir }), { code: 'INVALID_ARGUMENT' });
    assertNothingLeft(runDir);
  });

  it('rejects an impossible profile before starting anything', async () => {
    const runDir = join(root.dir, 'badprofile');
    await assert.rejects(Vm.launch({ id: 'fail-profile', profile: guestProfile({ vcpus: 0 }), runDir }), { code: 'INVALID_ARGUMENT', message: /vcpus/ });
    assertNothingLeft(runDir);
  });
});
