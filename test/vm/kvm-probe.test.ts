import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isPodvisorError } from '../../src/errors.js';
import { chooseAccel, type Acceleration } from '../../src/vm/host.js';
import { probeKvm } from '../../src/vm/kvm-probe.js';

/**
 * The KVM probe with real QEMU: its test guest really runs (under TCG here, the only
 * accelerator this machine has), and the ways a KVM host can be broken are simulated
 * by what the probe is pointed at: no device, a device that opens but is no KVM (real
 * QEMU then refuses), and a QEMU that hangs like a stuck KVM guest.
 */

const dir = mkdtempSync(join(tmpdir(), 'pv-kvmprobe-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('KVM probe', () => {
  it('sees its test guest run (TCG stands in for a working KVM)', async () => {
    // The probe's own 5 s deadline is for KVM; a test guest under TCG on a loaded host may need more.
    const r = await probeKvm({ device: '/dev/null', accel: 'tcg', timeoutMs: 120_000 });
    assert.equal(r.usable, true, r.reason);
    assert.ok(r.ms > 0);
    console.log(`# probe with a guest that runs: ${r.ms} ms`);
  });

  it('reports a device that does not open', async () => {
    const r = await probeKvm({ device: join(dir, 'no-kvm') });
    assert.equal(r.usable, false);
    assert.match(r.reason, /no-kvm cannot be opened \(ENOENT\)/);
  });

  it('reports QEMU\'s own words when the device opens but KVM cannot run the guest', { skip: existsSync('/dev/kvm') && 'this host has a real /dev/kvm' }, async () => {
    const fake = join(dir, 'fake-kvm');
    writeFileSync(fake, '');
    const r = await probeKvm({ device: fake, timeoutMs: 120_000 }); // QEMU's refusal, not our deadline, however slow its start
    assert.equal(r.usable, false);
    assert.match(r.reason, /^KVM could not run a test guest: .*kvm/i);
    console.log(`# probe refused by QEMU: ${r.ms} ms: ${r.reason}`);
  });

  it('gives up on a guest that hangs (a stuck KVM) at its deadline', async () => {
    const hanging = join(dir, 'hanging-qemu');
    writeFileSync(hanging, '#!/bin/sh\necho "KVM internal error. Suberror: 1" >&2\nexec sleep 30\n');
    chmodSync(hanging, 0o755);
    const r = await probeKvm({ device: '/dev/null', qemuBinary: hanging, timeoutMs: 500 });
    assert.equal(r.usable, false);
    // The message says the deadline ended it (the fake QEMU itself would run 30 s): no need to time the probe.
    assert.match(r.reason, /KVM did not run a test guest within 500 ms: KVM internal error\. Suberror: 1/);
  });
});

describe('accelerator choice', () => {
  const broken: Acceleration = { accel: 'tcg', kvmUsable: false, reason: 'KVM could not run a test guest: emulation failure; using TCG emulation', probing: false };
  const working: Acceleration = { accel: 'kvm', kvmUsable: true, reason: 'KVM ran a test guest', probing: false };

  it('auto takes KVM only where the probe ran a guest', () => {
    assert.equal(chooseAccel('auto', broken), 'tcg');
    assert.equal(chooseAccel('auto', working), 'kvm');
    assert.equal(chooseAccel('tcg', working), 'tcg');
  });

  it('kvm where KVM cannot run a guest is refused with the probe\'s reason', () => {
    assert.equal(chooseAccel('kvm', working), 'kvm');
    assert.throws(() => chooseAccel('kvm', broken), (e) => {
      assert.ok(isPodvisorError(e, 'FAILED_PRECONDITION'));
      assert.match(e.message, /accel = "kvm" but KVM cannot run guests on this host: KVM could not run a test guest: emulation failure$/);
      return true;
    });
  });
});
