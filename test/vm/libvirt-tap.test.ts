import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createHostTap, HostTapMove, newHostTapName, TapHandoff } from '../../src/network/host-tap.js';
import { createNetns, removeNetns } from '../../src/network/netns.js';
import { TAP_NAME } from '../../src/network/tap-redirect.js';
import { LibvirtConnection } from '../../src/vm/libvirt/binding.js';
import { LibvirtVm } from '../../src/vm/libvirt/libvirt-vm.js';
import { libvirtUnavailable, startPrivateLibvirtd, type PrivateLibvirtd } from '../helpers/libvirtd.js';
import { cleanupOnSignal } from '../helpers/signal-cleanup.js';
import { guestProfile, qemuProcessesUsing, scratchRoot, testConfinement } from '../helpers/vm.js';

/**
 * The libvirt backend's pod tap (src/network/host-tap.ts) against the real kernel and a real
 * libvirtd of the test's own: the tap's host-netns window exposes nothing, and no failure
 * (libvirt refusing the domain, the launching process SIGKILLed before the move) leaves a
 * tap in the host netns or in the pod's. The working path (a pod on a CNI bridge reaching its
 * gateway) is test/network/pod-network.test.ts with PODVISOR_TEST_VM_BACKEND=libvirt.
 */
const skip = await libvirtUnavailable();

interface Link { ifname: string; ifalias?: string; flags: string[]; operstate: string; addr_info?: unknown[]; master?: string }

/** Links of the host netns (or of `netns`); `ip addr` for their addresses, `ip link` for the alias (`ip addr` omits it). */
function links(netns?: string): Link[] {
  const ip = (what: string) => {
    const cmd = ['ip', '-j', what, 'show'];
    return JSON.parse(netns ? execFileSync('nsenter', [`--net=${netns}`, ...cmd], { encoding: 'utf8' }) : execFileSync('ip', cmd.slice(1), { encoding: 'utf8' })) as Link[];
  };
  const addrs = new Map(ip('addr').map((l) => [l.ifname, l.addr_info]));
  return ip('link').map((l) => ({ ...l, addr_info: addrs.get(l.ifname) ?? [] }));
}

describe('libvirt backend pod tap', { skip }, () => {
  let libvirtd: PrivateLibvirtd;
  let conn: LibvirtConnection;
  const root = scratchRoot('lvtap');
  const netns = join(root.dir, 'netns');
  const tapsOf = (dir: string) => links().filter((l) => l.ifalias?.includes(dir)).map((l) => l.ifname);
  const podLinks = () => links(netns).map((l) => l.ifname).sort();
  const forget = cleanupOnSignal(async () => {
    await removeNetns(netns);
    root.remove();
  });

  before(async () => {
    libvirtd = await startPrivateLibvirtd();
    conn = new LibvirtConnection(libvirtd.uri);
    await createNetns(netns);
  });

  after(async () => {
    for (const name of tapsOf(root.dir)) execFileSync('ip', ['link', 'del', name]);
    await conn?.close();
    await libvirtd?.stop();
    await removeNetns(netns);
    forget();
    root.remove();
  });

  test('in the host netns the tap is down, has no address and no master; the move renames it into the pod netns', async () => {
    const handoff = new TapHandoff();
    const move = new HostTapMove(newHostTapName(), netns, TAP_NAME, handoff);
    assert.match(move.hostName, /^pvt[0-9a-f]{12}$/);
    await move.create(join(root.dir, 'window'));
    const [link] = links().filter((l) => l.ifname === move.hostName);
    assert.ok(link, 'the tap is in the host netns');
    assert.equal(link.ifalias, `podvisor ${join(root.dir, 'window')}`, 'its alias names whose it is');
    assert.ok(!link.flags.includes('UP'), `down: ${link.flags}`);
    assert.deepEqual(link.addr_info ?? [], [], 'no address, not even link-local');
    assert.equal(link.master, undefined);
    // Even brought up (as something on the host might), address generation is off: still no address.
    execFileSync('ip', ['link', 'set', 'dev', move.hostName, 'up']);
    assert.deepEqual(links().find((l) => l.ifname === move.hostName)?.addr_info ?? [], []);
    execFileSync('ip', ['link', 'set', 'dev', move.hostName, 'down']);
    await assert.rejects(createHostTap(move.hostName, 'x'), /exists already/, 'an existing name is never taken over');

    await move.moveIn();
    await handoff.placed;
    assert.deepEqual(tapsOf(root.dir), [], 'gone from the host netns');
    assert.deepEqual(podLinks(), ['lo', TAP_NAME]);
    await move.undo(new Error('test'));
    assert.deepEqual(podLinks(), ['lo']);
  });

  test('libvirt refuses the domain: no tap in the host netns or the pod netns, and the pod network hears why', async () => {
    const runDir = join(root.dir, 'refused');
    const handoff = new TapHandoff();
    // A kernel file QEMU cannot boot: every check before libvirt passes, the tap exists, then QEMU refuses to start.
    const kernel = join(root.dir, 'not-a-kernel');
    writeFileSync(kernel, 'not a kernel\n', { mode: 0o644 });
    await assert.rejects(LibvirtVm.launch(conn, {
      id: 'refused', profile: guestProfile({ kernel }), runDir, netns, tap: { name: TAP_NAME, mac: '02:00:00:00:00:08', handoff },
      confinement: testConfinement(),
    }), /libvirt: cannot create the domain/, "libvirt refused it (after the tap was made: it is in the XML)");
    await assert.rejects(handoff.placed, /libvirt: cannot create the domain/, 'the pod network waiting for the tap hears the failure');
    assert.deepEqual(tapsOf(root.dir), []);
    assert.deepEqual(podLinks(), ['lo']);
    assert.deepEqual(libvirtd.virsh('list', '--all', '--name').trim(), '');
  });

  test('the launching process SIGKILLed between the tap\'s creation and its move: killLeftover removes the tap and the domain', async () => {
    const runDir = join(root.dir, 'killed');
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'libvirt-tap-child.ts'), libvirtd.uri, runDir, netns], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise((r) => child.once('exit', r));
    // Poll for the host tap (it lives there while libvirt starts QEMU, seconds under TCG), then kill.
    const deadline = Date.now() + 120_000;
    let seen: string | undefined;
    while (!seen) {
      if (child.exitCode !== null) assert.fail(`the launching process ended first: ${stderr}`);
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        assert.fail('no host tap appeared within 120 s');
      }
      seen = tapsOf(runDir)[0];
      if (!seen) await sleep(10);
    }
    child.kill('SIGKILL');
    await exited;
    assert.deepEqual(tapsOf(runDir), [seen], 'killed before the move: the tap is still in the host netns');
    // libvirtd finishes a start its client left; a restarted podvisord comes seconds later. Wait
    // (bounded) until the domain is running or was never made, as recovery would find it.
    const name = 'podvisor-tapchild';
    for (let i = 0; i < 600; i++) {
      const all = libvirtd.virsh('list', '--all', '--name');
      if (!all.includes(name) || libvirtd.virsh('list', '--name').includes(name)) break;
      await sleep(100);
    }
    await LibvirtVm.killLeftover(conn, runDir);
    assert.deepEqual(tapsOf(runDir), [], 'killLeftover removed it (its name was in the run directory record)');
    // Its QEMU, if libvirt had started it, is ended with the domain.
    assert.equal(libvirtd.virsh('list', '--name').trim(), '');
    for (let i = 0; i < 100 && qemuProcessesUsing(runDir).length > 0; i++) await sleep(100);
    assert.deepEqual(qemuProcessesUsing(runDir), []);
    assert.deepEqual(podLinks(), ['lo'], 'nothing reached the pod netns');
  });
});
