import { readdirSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { failedPrecondition } from '../errors.js';

/**
 * Who a QEMU runs as. Each VM gets its own uid and gid from a range that /etc/subuid and
 * /etc/subgid assign to the QEMU user (`podvisor-qemu`, made by hack/install-deps), the way
 * rootless containers get theirs. QEMU starts as root only to open what its command line
 * names (sockets, kernel, disks, tap) and drops to that uid with `-runas` before the guest
 * runs a single instruction.
 *
 * Why one uid per VM rather than one for all: processes of the same uid can ptrace each
 * other and read each other's memory (process_vm_readv is not in QEMU's seccomp deny-list),
 * so a shared uid would let one escaped QEMU read every other tenant's guest RAM. A uid of
 * its own costs no /etc/passwd entry and one scan of /proc per daemon (bench/vm-hardening.ts).
 *
 * Which uids are taken: the first allocation reads every process's uid (VMs an earlier
 * daemon started and this one reattached); after that the daemon's own bookkeeping. Two
 * daemons on one host (tests) start their search at a point drawn from the sandbox id, so
 * they rarely meet; when they do, two VMs share a uid, weaker isolation, never a failure.
 */

export interface QemuIdentity {
  uid: number;
  gid: number;
}

interface IdRange {
  start: number;
  count: number;
}

export class QemuUsers {
  private range?: { uid: IdRange; gid: IdRange };
  /** Uids in use: seeded from /proc at the first allocation, then kept by allocate/reserve/release. */
  private taken?: Set<number>;

  constructor(
    readonly user: string,
    private readonly files = { subuid: '/etc/subuid', subgid: '/etc/subgid' },
  ) {}

  /** The ranges, read once; a missing entry is refused with the fix. */
  ranges(): { uid: IdRange; gid: IdRange } {
    if (!this.range) {
      const uid = readSubIdRange(this.files.subuid, this.user);
      const gid = readSubIdRange(this.files.subgid, this.user);
      if (!uid || !gid) {
        throw failedPrecondition(
          `QEMU's user "${this.user}" has no uid/gid range in ${this.files.subuid} and ${this.files.subgid}; ` +
            'run hack/install-deps, which creates the user and its range',
        );
      }
      if (uid.start < 1000 || gid.start < 1000) throw failedPrecondition(`the uid/gid range of "${this.user}" starts below 1000; it must not overlap system accounts`);
      this.range = { uid, gid };
    }
    return this.range;
  }

  /**
   * A uid for sandbox `id` that no live process has: starts at a point drawn from the id
   * (so two daemons on one host rarely meet) and probes upward.
   */
  allocate(id: string): QemuIdentity {
    const { uid: ur, gid: gr } = this.ranges();
    const count = Math.min(ur.count, gr.count);
    this.taken ??= uidsInUse(ur.start, ur.start + count);
    const first = createHash('sha256').update(id).digest().readUInt32BE(0) % count;
    for (let i = 0; i < count; i++) {
      const slot = (first + i) % count;
      const uid = ur.start + slot;
      if (this.taken.has(uid)) continue;
      this.taken.add(uid);
      return { uid, gid: gr.start + slot };
    }
    throw failedPrecondition(`all ${count} QEMU uids of "${this.user}" are in use`);
  }

  /** Marks a reattached VM's uid as taken. */
  reserve(uid: number): void {
    this.taken?.add(uid);
  }

  release(uid: number): void {
    this.taken?.delete(uid);
  }
}

/**
 * The identity a VM's record names, marked taken again in `users` (a reattach): no second
 * VM gets this uid while its QEMU runs. Undefined for an unconfined (root) QEMU.
 */
export function reclaimIdentity(record: { uid?: number; gid?: number }, users: QemuUsers | undefined): QemuIdentity | undefined {
  if (record.uid === undefined || record.gid === undefined) return undefined;
  users?.reserve(record.uid);
  return { uid: record.uid, gid: record.gid };
}

/** Parses "name:start:count" lines; the first entry for `user` wins. */
export function parseSubIdRange(text: string, user: string): IdRange | undefined {
  for (const line of text.split('\n')) {
    const [name, start, count] = line.trim().split(':');
    if (name !== user || start === undefined || count === undefined) continue;
    const s = Number(start);
    const c = Number(count);
    if (Number.isInteger(s) && Number.isInteger(c) && s > 0 && c > 0) return { start: s, count: c };
  }
  return undefined;
}

function readSubIdRange(file: string, user: string): IdRange | undefined {
  try {
    return parseSubIdRange(readFileSync(file, 'utf8'), user);
  } catch {
    return undefined;
  }
}

/**
 * Uids in [from, to) that run a process now. Read from each /proc/<pid>/status, not from the
 * owner of /proc/<pid>: QEMU drops its uid itself, which makes it non-dumpable, and the
 * /proc entries of a non-dumpable process belong to root.
 */
export function uidsInUse(from: number, to: number): Set<number> {
  const used = new Set<number>();
  for (const entry of readdirSync('/proc')) {
    if (entry.charCodeAt(0) < 48 || entry.charCodeAt(0) > 57) continue;
    try {
      const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${entry}/status`, 'utf8'));
      const uid = m ? Number(m[1]) : -1;
      if (uid >= from && uid < to) used.add(uid);
    } catch {
      /* it exited while we looked */
    }
  }
  return used;
}
