import { inNetns } from './netns.js';
import { runCommand } from './host-command.js';

/**
 * The path between the CNI interface and the VM (Kata's "tcfilter" model): a
 * tap beside the CNI veth in the pod's namespace, and two tc ingress filters
 * that move every frame from one to the other untouched. The CNI interface
 * keeps its addresses, MAC and any policy a plugin hangs on it; the guest NIC
 * takes the same MAC, so to the bridge the VM simply is the pod.
 */

/** The tap's name inside the pod netns (each pod has its own namespace, so one name fits all). */
export const TAP_NAME = 'tap0_pv';

export interface TapLink {
  /** The CNI interface's MTU, which the tap and the guest NIC copy. */
  mtu: number;
  /** The CNI interface's MAC, which the guest NIC takes. */
  mac: string;
}

/**
 * Makes the tap, up, before CNI has run: QEMU needs it at launch (microvm has no NIC hot-plug),
 * and creating it first lets CNI ADD run while the VM boots. QEMU opens it while still privileged.
 */
export async function createTap(netns: string): Promise<string> {
  const exists = (await runCommand('nsenter', [`--net=${netns}`, 'ip', 'link', 'show', 'dev', TAP_NAME])).code === 0;
  // vnet_hdr lets QEMU pass segmentation offloads through instead of cutting every frame to MTU size.
  if (!exists) await inNetns(netns, 'ip', ['tuntap', 'add', 'dev', TAP_NAME, 'mode', 'tap', 'vnet_hdr'], 'creating the pod tap');
  await inNetns(netns, 'ip', ['link', 'set', 'dev', TAP_NAME, 'up'], 'bringing the pod tap up');
  return TAP_NAME;
}

/** Once CNI made `ifName`: the tap takes its MTU, and the redirects both ways. Idempotent. */
export async function redirectTap(netns: string, ifName: string): Promise<TapLink> {
  const ip = (args: string[], what: string) => inNetns(netns, 'ip', args, what);
  const tc = (args: string[], what: string) => inNetns(netns, 'tc', args, what);
  const [link] = JSON.parse(await ip(['-j', 'link', 'show', 'dev', ifName], `reading CNI interface ${ifName}`)) as Array<{ mtu: number; address: string }>;
  if (!link) throw new Error(`no interface ${ifName} in ${netns}`);
  await ip(['link', 'set', 'dev', TAP_NAME, 'mtu', String(link.mtu)], 'setting the pod tap MTU');
  for (const [from, to] of [[ifName, TAP_NAME], [TAP_NAME, ifName]] as const) {
    await tc(['qdisc', 'replace', 'dev', from, 'ingress'], `adding an ingress qdisc to ${from}`);
    // replace keeps this idempotent: one filter per direction, whatever ran before.
    await tc(['filter', 'replace', 'dev', from, 'parent', 'ffff:', 'pref', '49152', 'protocol', 'all', 'u32', 'match', 'u8', '0', '0',
      'action', 'mirred', 'egress', 'redirect', 'dev', to], `redirecting ${from} to ${to}`);
  }
  return { mtu: link.mtu, mac: link.address.toLowerCase() };
}

/** Deletes the tap (its filters go with it); fine when it or the namespace is gone. */
export async function disconnectTap(netns: string): Promise<void> {
  await runCommand('nsenter', [`--net=${netns}`, 'ip', 'link', 'del', 'dev', TAP_NAME]);
}
