import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { alreadyExists, invalidArgument, messageOf, notFound, resourceExhausted } from '../errors.js';
import { logger } from '../log.js';
import { readJsonFile, writeJsonAtomicSync } from '../util/atomic-file.js';
import { SCSI_BUS, SYSTEM_DISK_SCSI_ID } from './qemu-args.js';
import { QmpCommandError, type QmpClient } from './qmp-client.js';

/**
 * Disks hot-plugged into a running VM as `scsi-hd` on the virtio-scsi controller (microvm
 * cannot hot-plug virtio-blk). Each disk takes its own SCSI target, LUN 0. The set is kept
 * in the run directory so a reattached daemon knows what is plugged.
 */

const log = logger('vm-disks');

export interface HotplugDiskRequest {
  /** The caller's name for the disk (e.g. an image id or "scratch-<container>"). */
  id: string;
  /** Host path of the raw disk image. */
  path: string;
  readOnly: boolean;
}

/** How the guest agent finds the disk: by serial (VPD page 0x80) or by SCSI target/LUN. */
export interface DiskAddress {
  id: string;
  serial: string;
  scsiId: number;
  lun: number;
}

interface PluggedDisk extends DiskAddress {
  path: string;
  readOnly: boolean;
}

const MAX_SCSI_ID = 255;

/** Opens a disk file on QEMU's behalf (a confined QEMU); gives the name QEMU should open. */
export type DiskOpener = (path: string, readOnly: boolean) => Promise<{ filename: string; done(): void }>;

/** QEMU node and device names for target `n`; short, as node names are limited to 31 bytes. */
function qemuNames(scsiId: number) {
  return { file: `hd${scsiId}-file`, format: `hd${scsiId}`, device: `hd${scsiId}-dev` };
}

/** A serial that is unique per VM and fits the 20 bytes every SCSI/ATA path keeps. */
function serialFor(id: string, scsiId: number): string {
  return `pv${scsiId}-${createHash('sha256').update(id).digest('hex').slice(0, 12)}`;
}

export class DiskSet {
  private readonly disks = new Map<string, PluggedDisk>();
  /** Hot-plug operations run one at a time, so two callers never pick the same target. */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly file: string, private readonly opener?: DiskOpener) {}

  static create(file: string, opener?: DiskOpener): DiskSet {
    const set = new DiskSet(file, opener);
    set.persist();
    return set;
  }

  static load(file: string, opener?: DiskOpener): DiskSet {
    const set = new DiskSet(file, opener);
    for (const d of readJsonFile<PluggedDisk[]>(file) ?? []) set.disks.set(d.id, d);
    return set;
  }

  list(): DiskAddress[] {
    return [...this.disks.values()].map(({ id, serial, scsiId, lun }) => ({ id, serial, scsiId, lun }));
  }

  plug(qmp: QmpClient, req: HotplugDiskRequest): Promise<DiskAddress> {
    return this.serialise(() => this.doPlug(qmp, req));
  }

  unplug(qmp: QmpClient, id: string, timeoutMs: number): Promise<void> {
    return this.serialise(() => this.doUnplug(qmp, id, timeoutMs));
  }

  private serialise<T>(op: () => Promise<T>): Promise<T> {
    const result = this.queue.then(op);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async doPlug(qmp: QmpClient, req: HotplugDiskRequest): Promise<DiskAddress> {
    if (!req.id || req.id.length > 256 || /[\0-\x1f]/.test(req.id)) {
      throw invalidArgument(`disk id ${JSON.stringify(req.id)} must be 1-256 printable characters`);
    }
    if (this.disks.has(req.id)) throw alreadyExists(`disk ${req.id} is already plugged into this VM`);
    try {
      if (!statSync(req.path).isFile()) throw new Error('not a regular file');
    } catch (e) {
      throw invalidArgument(`disk image ${req.path} cannot be used: ${(e as NodeJS.ErrnoException).code ?? messageOf(e)}`);
    }
    const scsiId = this.freeScsiId();
    const names = qemuNames(scsiId);
    const disk: PluggedDisk = { id: req.id, serial: serialFor(req.id, scsiId), scsiId, lun: 0, path: req.path, readOnly: req.readOnly };

    const added: string[] = [];
    const grant = this.opener ? await this.opener(req.path, req.readOnly) : { filename: req.path, done() {} };
    try {
      await qmp.execute('blockdev-add', { driver: 'file', 'node-name': names.file, filename: grant.filename, 'read-only': req.readOnly });
      added.push(names.file);
      await qmp.execute('blockdev-add', { driver: 'raw', 'node-name': names.format, file: names.file, 'read-only': req.readOnly });
      added.push(names.format);
      await qmp.execute('device_add', {
        driver: 'scsi-hd', id: names.device, bus: SCSI_BUS, channel: 0, 'scsi-id': scsiId, lun: 0,
        drive: names.format, serial: disk.serial,
      });
    } catch (e) {
      for (const node of added.reverse()) {
        await qmp.execute('blockdev-del', { 'node-name': node }).catch((err) => log.warn({ node, err: messageOf(err) }, 'rollback of blockdev-add failed'));
      }
      throw e;
    } finally {
      grant.done();
    }
    this.disks.set(disk.id, disk);
    this.persist();
    log.info({ disk: disk.id, scsiId, serial: disk.serial, readOnly: disk.readOnly }, 'disk hot-plugged');
    return { id: disk.id, serial: disk.serial, scsiId, lun: 0 };
  }

  private async doUnplug(qmp: QmpClient, id: string, timeoutMs: number): Promise<void> {
    const disk = this.disks.get(id);
    if (!disk) throw notFound(`disk ${id} is not plugged into this VM`);
    await releaseTarget(qmp, disk.scsiId, timeoutMs);
    this.disks.delete(id);
    this.persist();
    log.info({ disk: id, scsiId: disk.scsiId }, 'disk unplugged');
  }

  /**
   * Makes the record and QEMU agree after a daemon restart: a crash between a QMP step and the
   * record write leaves either a recorded disk QEMU no longer has, or QEMU devices and nodes
   * no record knows. The first are forgotten, the second removed.
   */
  reconcile(qmp: QmpClient, timeoutMs: number): Promise<void> {
    return this.serialise(async () => {
      const devices = new Set((await qmp.execute('query-block')).map((b) => b.qdev).filter((q): q is string => !!q));
      for (const disk of [...this.disks.values()]) {
        if (devices.has(qemuNames(disk.scsiId).device)) continue;
        log.warn({ disk: disk.id, scsiId: disk.scsiId }, 'recorded disk is no longer in QEMU; forgetting it');
        await releaseTarget(qmp, disk.scsiId, timeoutMs);
        this.disks.delete(disk.id);
      }
      const known = new Set([...this.disks.values()].map((d) => d.scsiId));
      const nodes = await qmp.execute('query-named-block-nodes', { flat: true });
      const stray = new Set<number>();
      for (const name of [...devices, ...nodes.map((n) => n['node-name'])]) {
        const m = /^hd(\d+)(?:-file|-dev)?$/.exec(name);
        if (m && !known.has(Number(m[1]))) stray.add(Number(m[1]));
      }
      for (const scsiId of stray) {
        log.warn({ scsiId }, 'QEMU has a disk no record knows (plug interrupted); removing it');
        await releaseTarget(qmp, scsiId, timeoutMs);
      }
      this.persist();
    });
  }

  private freeScsiId(): number {
    const used = new Set([SYSTEM_DISK_SCSI_ID, ...[...this.disks.values()].map((d) => d.scsiId)]);
    for (let n = 0; n <= MAX_SCSI_ID; n++) if (!used.has(n)) return n;
    throw resourceExhausted(`no free SCSI target left (all ${MAX_SCSI_ID} are in use)`);
  }

  private persist(): void {
    writeJsonAtomicSync(this.file, [...this.disks.values()]);
  }
}

/**
 * Removes target `scsiId`'s device (waiting for DEVICE_DELETED) and block nodes from QEMU.
 * Parts that are already gone are skipped, so it can finish a removal a crash interrupted.
 */
async function releaseTarget(qmp: QmpClient, scsiId: number, timeoutMs: number): Promise<void> {
  const names = qemuNames(scsiId);
  // Listen before asking: the event can arrive before device_del's reply.
  const deleted = qmp.waitForEvent('DEVICE_DELETED', (d) => d.device === names.device, timeoutMs);
  deleted.catch(() => undefined);
  try {
    await qmp.execute('device_del', { id: names.device });
    await deleted;
  } catch (e) {
    if (!(e instanceof QmpCommandError && e.qmpClass === 'DeviceNotFound')) throw e;
  }
  for (const node of [names.format, names.file]) {
    try {
      await qmp.execute('blockdev-del', { 'node-name': node });
    } catch (e) {
      if (!(e instanceof QmpCommandError && /Failed to find node/.test(e.desc))) throw e;
    }
  }
}
