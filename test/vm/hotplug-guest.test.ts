import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { bootGuest, busyboxRootfsDisk, busyboxSpec, collectProcess, type BootedGuest } from '../helpers/guest.js';
import { scratchRoot } from '../helpers/vm.js';

/**
 * Hot-plugged disks as the guest sees them: the agent finds each by the address hotplugDisk
 * returned, a container reads a read-only erofs disk and writes a scratch ext4 disk, and after
 * unplug the guest no longer has them.
 */

const root = scratchRoot('hpguest');
const token = randomBytes(12).toString('hex');
let guest: BootedGuest;
let busybox: { path: string; remove(): void };
const dataDisk = join(root.dir, 'data.erofs');
const scratchDisk = join(root.dir, 'scratch.ext4');
let seq = 0;

/** Runs `args` in a busybox container with `hostDir` (in the guest) bind-mounted at /mnt. */
async function runWithMount(guestDir: string, args: string[]): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  const id = `hp${++seq}`;
  const rootfs = `/run/podvisor/rootfs/${id}`;
  await guest.agent.mountOverlay({ lowerDirs: ['/run/podvisor/images/busybox'], target: rootfs });
  const spec = JSON.parse(Buffer.from(busyboxSpec(rootfs, args)).toString());
  spec.mounts.push({ destination: '/mnt', type: 'bind', source: guestDir, options: ['rbind', 'rw'] });
  await guest.agent.createContainer({ containerId: id, ociSpecJson: Buffer.from(JSON.stringify(spec)) });
  const io = collectProcess(guest.agent, id);
  await guest.agent.startContainer(id);
  const exit = await io.exit;
  io.dispose();
  await guest.agent.deleteContainer({ containerId: id, force: true });
  await guest.agent.unmount({ path: rootfs, removeDir: true });
  return { stdout: io.stdout, stderr: io.stderr, exitCode: exit.exitCode };
}

describe('hot-plugged disks seen by the guest', () => {
  before(async () => {
    const tree = join(root.dir, 'tree');
    mkdirSync(tree);
    writeFileSync(join(tree, 'token.txt'), `${token}\n`);
    execFileSync('mkfs.erofs', ['--quiet', '--all-root', '-T0', dataDisk, tree]);
    execFileSync('truncate', ['-s', '16M', scratchDisk]);
    execFileSync('mkfs.ext4', ['-q', '-F', scratchDisk]);
    busybox = busyboxRootfsDisk();
    guest = await bootGuest();
    const bb = await guest.vm.hotplugDisk({ id: 'busybox', path: busybox.path, readOnly: true });
    await guest.agent.mountDisk({ serial: bb.serial, mountPoint: '/run/podvisor/images/busybox' });
  });
  after(async () => {
    await guest?.stop();
    busybox?.remove();
    root.remove();
  });

  it('reads a file from a read-only erofs disk found by its serial', async () => {
    const disk = await guest.vm.hotplugDisk({ id: 'sha256:data', path: dataDisk, readOnly: true });
    const mounted = await guest.agent.mountDisk({ serial: disk.serial, mountPoint: '/run/podvisor/vmtest/data' });
    assert.match(mounted.device, /^\/dev\/sd[a-z]$/);
    const r = await runWithMount('/run/podvisor/vmtest/data', ['sh', '-c', 'cat /mnt/token.txt; echo x > /mnt/new 2>/dev/null || echo read-only']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, `${token}\nread-only\n`);
  });

  it('writes a scratch ext4 disk found by SCSI target/LUN, and the host sees the data', async () => {
    const disk = await guest.vm.hotplugDisk({ id: 'scratch-1', path: scratchDisk, readOnly: false });
    await guest.agent.mountDisk({ scsiId: disk.scsiId, lun: disk.lun, mountPoint: '/run/podvisor/vmtest/scratch', fsType: 'ext4', readWrite: true });
    const r = await runWithMount('/run/podvisor/vmtest/scratch', ['sh', '-c', `echo written-${token} > /mnt/out && sync && cat /mnt/out`]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, `written-${token}\n`);
    await guest.agent.unmount({ path: '/run/podvisor/vmtest/scratch' });
    await guest.vm.unplugDisk('scratch-1');
    const onHost = execFileSync('debugfs', ['-R', 'cat /out', scratchDisk], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    assert.equal(onHost, `written-${token}\n`);
  });

  it('unplugs a disk so the guest no longer finds it', async () => {
    const serial = guest.vm.disks().find((d) => d.id === 'sha256:data')!.serial;
    await guest.agent.unmount({ path: '/run/podvisor/vmtest/data' });
    await guest.vm.unplugDisk('sha256:data');
    await assert.rejects(
      guest.agent.mountDisk({ serial, mountPoint: '/run/podvisor/vmtest/again', waitMs: 1000 }),
      /no disk with serial/,
    );
    assert.deepEqual(guest.vm.disks().map((d) => d.id), ['busybox']);
  });
});
