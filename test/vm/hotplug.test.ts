import assert from 'node:assert/strict';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Vm } from '../../src/vm/vm.js';
import { guestProfile, qemuProcessesUsing, scratchRoot } from '../helpers/vm.js';

/** Hot-plug and unplug of SCSI disks through QMP on a real QEMU. */

const root = scratchRoot('hotplug');
let vm: Vm;
const imageDisk = join(root.dir, 'image.raw');
const scratchDisk = join(root.dir, 'scratch.raw');

async function blockNodes(): Promise<Map<string, boolean>> {
  const blocks = await vm.qmp.execute('query-block');
  return new Map(blocks.filter((b) => b.inserted && b.qdev).map((b) => [b.qdev as string, b.inserted!.ro]));
}

describe('disk hot-plug', () => {
  before(async () => {
    writeFileSync(imageDisk, '');
    truncateSync(imageDisk, 4 * 1024 * 1024);
    writeFileSync(scratchDisk, '');
    truncateSync(scratchDisk, 8 * 1024 * 1024);
    vm = await Vm.launch({ id: 'hotplug', profile: guestProfile(), runDir: join(root.dir, 'run') });
  });
  after(async () => {
    await vm?.destroy({ timeoutMs: 5000 });
    assert.deepEqual(qemuProcessesUsing(root.dir), []);
    root.remove();
  });

  it('plugs a read-only image disk and a writable scratch disk on their own SCSI targets', async () => {
    const image = await vm.hotplugDisk({ id: 'sha256:0123456789abcdef', path: imageDisk, readOnly: true });
    const scratch = await vm.hotplugDisk({ id: 'scratch-c1', path: scratchDisk, readOnly: false });
    assert.deepEqual([image.scsiId, image.lun, scratch.scsiId, scratch.lun], [1, 0, 2, 0]);
    assert.notEqual(image.serial, scratch.serial);
    assert.ok(image.serial.length <= 20);
    const nodes = await blockNodes();
    assert.equal(nodes.get('hd1-dev'), true, 'image disk is read-only in QEMU');
    assert.equal(nodes.get('hd2-dev'), false, 'scratch disk is writable');
    assert.deepEqual(vm.disks().map((d) => d.id), ['sha256:0123456789abcdef', 'scratch-c1']);
    const persisted = JSON.parse(readFileSync(vm.paths.disksFile, 'utf8')) as Array<{ id: string; scsiId: number }>;
    assert.deepEqual(persisted.map((d) => [d.id, d.scsiId]), [['sha256:0123456789abcdef', 1], ['scratch-c1', 2]]);
  });

  it('gives concurrent hot-plugs distinct targets and unplugs them concurrently', async () => {
    const ids = ['c-a', 'c-b', 'c-c', 'c-d'];
    const plugged = await Promise.all(ids.map((id) => vm.hotplugDisk({ id, path: imageDisk, readOnly: true })));
    const targets = plugged.map((d) => d.scsiId);
    assert.equal(new Set(targets).size, ids.length, `distinct SCSI targets: ${targets.join(',')}`);
    assert.ok(targets.every((t) => t > 2), 'targets 1 and 2 are still in use');
    await Promise.all(ids.map((id) => vm.unplugDisk(id)));
    assert.deepEqual(vm.disks().map((d) => d.id), ['sha256:0123456789abcdef', 'scratch-c1']);
    assert.equal((await blockNodes()).size, 3);
  });

  it('refuses a duplicate id, a missing file, and unplugging an unknown disk', async () => {
    await assert.rejects(vm.hotplugDisk({ id: 'scratch-c1', path: scratchDisk, readOnly: false }), { code: 'ALREADY_EXISTS' });
    await assert.rejects(vm.hotplugDisk({ id: 'x', path: join(root.dir, 'nope.raw'), readOnly: true }), { code: 'INVALID_ARGUMENT', message: /nope\.raw.*ENOENT/ });
    await assert.rejects(vm.unplugDisk('never-plugged'), { code: 'NOT_FOUND' });
    assert.equal((await blockNodes()).size, 3, 'failed requests leave no block nodes behind');
  });

  it('keeps the plugged disks across a reattach', async () => {
    const before = vm.disks();
    vm.detach();
    vm = await Vm.reattach(vm.paths.dir);
    assert.deepEqual(vm.disks(), before);
  });

  it('reconciles disks with QEMU on reattach after an interrupted plug or unplug', async () => {
    // A plug the daemon did not live to record: devices and nodes on target 40.
    await vm.qmp.execute('blockdev-add', { driver: 'file', 'node-name': 'hd40-file', filename: imageDisk, 'read-only': true });
    await vm.qmp.execute('blockdev-add', { driver: 'raw', 'node-name': 'hd40', file: 'hd40-file', 'read-only': true });
    await vm.qmp.execute('device_add', { driver: 'scsi-hd', id: 'hd40-dev', bus: 'scsi0.0', 'scsi-id': 40, lun: 0, drive: 'hd40' });
    // A recorded disk whose unplug finished in QEMU but not in the record.
    const doomed = await vm.hotplugDisk({ id: 'half-unplugged', path: imageDisk, readOnly: true });
    const gone = vm.qmp.waitForEvent('DEVICE_DELETED', (d) => d.device === `hd${doomed.scsiId}-dev`);
    await vm.qmp.execute('device_del', { id: `hd${doomed.scsiId}-dev` });
    await gone;

    vm.detach();
    vm = await Vm.reattach(vm.paths.dir);
    assert.deepEqual(vm.disks().map((d) => d.id), ['sha256:0123456789abcdef', 'scratch-c1']);
    assert.deepEqual([...(await blockNodes()).keys()].sort(), ['hd1-dev', 'hd2-dev', 'system-disk']);
    const nodes = (await vm.qmp.execute('query-named-block-nodes', { flat: true })).map((n) => n['node-name']).sort();
    assert.deepEqual(nodes, ['hd1', 'hd1-file', 'hd2', 'hd2-file', 'system', 'system-file']);
  });

  it('unplugs after DEVICE_DELETED, releases the nodes, and reuses the target', async () => {
    await vm.unplugDisk('sha256:0123456789abcdef');
    const nodes = await blockNodes();
    assert.equal(nodes.has('hd1-dev'), false);
    assert.deepEqual(vm.disks().map((d) => d.id), ['scratch-c1']);
    // The node names are free again: the same target can be plugged anew.
    const again = await vm.hotplugDisk({ id: 'sha256:fedcba', path: imageDisk, readOnly: true });
    assert.equal(again.scsiId, 1);
    await vm.unplugDisk('sha256:fedcba');
    await vm.unplugDisk('scratch-c1');
    assert.deepEqual([...(await blockNodes()).keys()], ['system-disk']);
    assert.deepEqual(JSON.parse(readFileSync(vm.paths.disksFile, 'utf8')), []);
  });
});
