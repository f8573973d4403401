import { randomBytes } from 'node:crypto';
import { failedPrecondition } from '../errors.js';
import { mustRun, runCommand } from './host-command.js';
import { inNetns } from './netns.js';

/**
 * A pod tap for a VM backend whose QEMU cannot start inside the pod's network namespace
 * (libvirt starts QEMU in the host's): the tap is made in the host namespace under a name
 * podvisor picks, QEMU opens it there, and the link is then moved into the pod namespace
 * and renamed to the name the pod network plumbing (tap-redirect.ts) expects. QEMU's open
 * tap fd follows the device across namespaces (checked on Linux 6.18: frames flow both
 * ways after `ip link set ... netns`).
 *
 * Until the move the tap is in the host namespace: down, no address (IPv6 address
 * generation off, so not even a link-local one when something brings it up), enslaved to
 * nothing. Whoever creates one records its name first, so that a crash before the move
 * leaves something that names it for removal.
 */

/** Every host-side pod tap starts with this; the rest is random, so no tenant input reaches a host interface name. */
export const HOST_TAP_PREFIX = 'pvt';
const HOST_TAP_PATTERN = /^pvt[0-9a-f]{12}$/;

/** A fresh name, 15 characters (the kernel's limit): `pvt` and 48 random bits. */
export function newHostTapName(): string {
  return `${HOST_TAP_PREFIX}${randomBytes(6).toString('hex')}`;
}

/** Whether `name` is one podvisor would have given a host-side tap (anything else is never touched). */
export function isHostTapName(name: string): boolean {
  return HOST_TAP_PATTERN.test(name);
}

function assertHostTapName(name: string): void {
  if (!isHostTapName(name)) throw failedPrecondition(`${JSON.stringify(name)} is not a podvisor host tap name`);
}

/** The host interface `name`, or undefined; `kind` is "tun" for a tap. */
async function hostLink(name: string): Promise<{ kind?: string } | undefined> {
  const r = await runCommand('ip', ['-d', '-j', 'link', 'show', 'dev', name]);
  if (r.code !== 0) return undefined;
  const [link] = JSON.parse(r.stdout) as Array<{ linkinfo?: { info_kind?: string } }>;
  return link ? { kind: link.linkinfo?.info_kind } : undefined;
}

/**
 * Creates the tap in the host namespace, down and without addresses. Refuses a name that
 * exists already. `owner` becomes its alias (`ip link` shows it), so an operator or a
 * test can tell whose tap it is: the run directory of the VM it is for.
 */
export async function createHostTap(name: string, owner: string): Promise<void> {
  assertHostTapName(name);
  // `ip tuntap add` on an existing persistent tap would attach to it instead of failing.
  if (await hostLink(name)) throw failedPrecondition(`host interface ${name} exists already`);
  // vnet_hdr as the pod-netns tap (tap-redirect.ts); a single queue, as QEMU opens it.
  await mustRun('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap', 'vnet_hdr'], `creating host tap ${name}`);
  try {
    await mustRun('ip', ['link', 'set', 'dev', name, 'addrgenmode', 'none', 'alias', `podvisor ${owner}`], `turning off address generation on ${name}`);
  } catch (e) {
    await removeHostTap(name);
    throw e;
  }
}

/**
 * Moves the host tap into the namespace file `netns`, renamed `podName` in the same step
 * (so it never shows there under its host name), and brings it up there.
 */
export async function moveTapIntoNetns(name: string, netns: string, podName: string): Promise<void> {
  assertHostTapName(name);
  await mustRun('ip', ['link', 'set', 'dev', name, 'netns', netns, 'name', podName], `moving tap ${name} into ${netns} as ${podName}`);
  await inNetns(netns, 'ip', ['link', 'set', 'dev', podName, 'up'], `bringing the pod tap ${podName} up`);
}

/** Deletes the host tap `name` if it is still in the host namespace (and is a tap); true if one was deleted. */
export async function removeHostTap(name: string): Promise<boolean> {
  if (!isHostTapName(name)) return false;
  const link = await hostLink(name);
  if (!link || link.kind !== 'tun') return false;
  await mustRun('ip', ['link', 'del', 'dev', name], `deleting host tap ${name}`);
  return true;
}

/**
 * How the VM backend tells the pod network that the tap is in the pod namespace (the CNI
 * redirects need it there), or that it never will be. Settles once; later calls are ignored.
 */
export class TapHandoff {
  readonly placed: Promise<void>;
  private settle!: (err?: unknown) => void;
  private settled = false;

  constructor() {
    this.placed = new Promise<void>((resolve, reject) => {
      this.settle = (err) => (err === undefined ? resolve() : reject(err));
    });
    this.placed.catch(() => undefined); // observed by the network's attach, if it still waits
  }

  done(): void {
    if (this.settled) return;
    this.settled = true;
    this.settle();
  }

  failed(err: unknown): void {
    if (this.settled) return;
    this.settled = true;
    this.settle(err instanceof Error ? err : new Error(String(err)));
  }
}

/**
 * One pod tap's trip from the host netns into the pod's, as a VM backend runs it: `create`
 * (host side), the backend has QEMU open it, `moveIn`, and `undo` after any failure, which
 * leaves no tap in either namespace and tells the pod network it will not come.
 */
export class HostTapMove {
  constructor(
    readonly hostName: string,
    readonly netns: string,
    readonly podName: string,
    private readonly handoff?: TapHandoff,
  ) {}

  create(owner: string): Promise<void> {
    return createHostTap(this.hostName, owner);
  }

  async moveIn(): Promise<void> {
    await moveTapIntoNetns(this.hostName, this.netns, this.podName);
    this.handoff?.done();
  }

  async undo(err: unknown): Promise<void> {
    this.handoff?.failed(err);
    await removeHostTap(this.hostName);
    // Moved (maybe half: renamed there but not up) before the VM failed. Only this move ever puts
    // a tap of that name into the pod netns (the pod network made none there), so it is ours.
    await runCommand('nsenter', [`--net=${this.netns}`, 'ip', 'link', 'del', 'dev', this.podName]);
  }
}
