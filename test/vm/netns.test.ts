import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Vm } from '../../src/vm/vm.js';
import { guestProfile, qemuProcessesUsing, scratchRoot } from '../helpers/vm.js';

/** QEMU started inside a sandbox's network namespace, with its NIC on a tap there. */

const root = scratchRoot('netns');
const netns = `pv-vmtest-${process.pid}`;
const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8' });

describe('VM in a network namespace', () => {
  let vm: Vm | undefined;
  before(() => {
    ip('netns', 'add', netns);
    ip('-n', netns, 'tuntap', 'add', 'tap0', 'mode', 'tap');
    ip('-n', netns, 'link', 'set', 'tap0', 'up');
  });
  after(async () => {
    await vm?.destroy({ timeoutMs: 5000 });
    ip('netns', 'del', netns);
    assert.deepEqual(qemuProcessesUsing(root.dir), []);
    root.remove();
  });

  it('runs QEMU in the namespace with a virtio-net NIC on its tap', async () => {
    assert.match(ip('-n', netns, 'link', 'show', 'tap0'), /NO-CARRIER/, 'no one holds the tap yet');
    vm = await Vm.launch({
      id: 'netns', profile: guestProfile(), runDir: join(root.dir, 'run'), netns,
      tap: { name: 'tap0', mac: '02:50:56:00:00:01' },
    });
    const nsInode = statSync(`/run/netns/${netns}`).ino;
    assert.equal(readlinkSync(`/proc/${vm.pid}/ns/net`), `net:[${nsInode}]`, 'QEMU is in the sandbox netns');
    assert.doesNotMatch(ip('-n', netns, 'link', 'show', 'tap0'), /NO-CARRIER/, 'QEMU opened the tap');
    assert.equal(await vm.status(), 'running');
    const info = await vm.stop({ timeoutMs: 5000 });
    assert.equal(info.reason, 'stopped');
    assert.match(ip('-n', netns, 'link', 'show', 'tap0'), /NO-CARRIER/, 'the tap is released');
  });

  it('also takes the namespace as a file path (as CNI hands it over)', async () => {
    const pathVm = await Vm.launch({ id: 'netns-path', profile: guestProfile(), runDir: join(root.dir, 'bypath'), netns: `/run/netns/${netns}` });
    try {
      assert.equal(readlinkSync(`/proc/${pathVm.pid}/ns/net`), `net:[${statSync(`/run/netns/${netns}`).ino}]`);
      assert.equal(await pathVm.status(), 'running');
    } finally {
      await pathVm.destroy({ timeoutMs: 5000 });
    }
  });

  it('fails clearly for a network namespace that does not exist', async () => {
    const runDir = join(root.dir, 'nonet');
    await assert.rejects(
      Vm.launch({ id: 'nonet', profile: guestProfile(), runDir, netns: `${netns}-missing` }),
      { code: 'FAILED_PRECONDITION', message: /Cannot open network namespace/ },
    );
    assert.equal(existsSync(runDir), false);
  });
});
