import { invalidArgument, unimplemented } from '../../errors.js';
import type { QemuIdentity } from '../confinement.js';
import type { VmProfile } from '../profile.js';
import { AGENT_PORT_NAME, baseKernelArgs, SYSTEM_DISK_SCSI_ID, SYSTEM_DISK_SERIAL, type SharedFs } from '../qemu-args.js';
import { escapeOptionValue } from '../qemu-option.js';
import type { RunDirPaths } from '../run-dir.js';

/**
 * The libvirt domain XML for one pod VM, from the same VM profile the QEMU launcher turns
 * into a command line (src/vm/qemu-args.ts), with the same devices in the same roles: the
 * agent's virtio-serial port, the serial console on a unix socket, a virtio-scsi
 * controller `scsi0` for the system disk and hot-plugged image disks, virtio-rng, pvpanic
 * and the virtio-fs share (libvirt gives the controller of index 0 the id `scsi0`, as the
 * launcher does, so hot-plug is the same). libvirt 9.0 runs microvm when every device has a virtio-mmio
 * address and no PCI device is implied (no USB controller, no memory balloon).
 *
 * QMP: libvirt owns QEMU's monitor, so a second monitor for podvisor is added through
 * libvirt's QEMU pass-through (`<qemu:commandline>`); hot-plug of image disks and the
 * STOP/GUEST_PANICKED/SHUTDOWN events go through it exactly as with the QEMU backend. libvirt
 * marks such domains tainted (custom-argv) and does not list the hot-plugged disks.
 */

export interface DomainXmlInput {
  /** Domain name (`virsh list` shows it). */
  name: string;
  profile: VmProfile;
  paths: RunDirPaths;
  accel: 'kvm' | 'tcg';
  tscKhz: number;
  sharedFs?: SharedFs;
  /** The uid/gid QEMU runs as (libvirt's per-domain DAC label); without it, qemu.conf's user. */
  runAs?: QemuIdentity;
  /** The pod NIC: a tap in libvirtd's (the host's) netns, by its host-side name (see tapInterfaceXml). */
  tap?: { name: string; mac?: string };
}

/** libvirt domain names: what podvisor's VM ids allow, behind a prefix that says who made it. */
export function domainName(vmId: string): string {
  return `podvisor-${vmId}`;
}

/** The id of podvisor's own QMP chardev; it must appear in QEMU's argv (run-dir.ts looksLikeOurQemu). */
const QMP_CHARDEV = 'podvisor-qmp';

export function buildDomainXml(input: DomainXmlInput): string {
  const { profile, paths } = input;
  if (profile.memory && profile.memory.kind !== 'anonymous') {
    throw unimplemented('the libvirt VM backend cannot start a VM from a template (file-backed guest memory); use the qemu backend for template clones');
  }
  if (profile.qemuBinary) {
    throw invalidArgument('the libvirt VM backend runs the QEMU libvirt is configured with; a profile qemuBinary is not used there');
  }
  const microvm = profile.machine === 'microvm';
  // microvm has no PCI: each virtio device gets a virtio-mmio slot. q35 lets libvirt place PCI addresses.
  const mmio = microvm ? "<address type='virtio-mmio'/>" : '';
  const x = escapeXml;
  const cmdline = [...baseKernelArgs(input.tscKhz), ...profile.kernelArgs].join(' ');
  const qemuArgs: string[] = [
    '-chardev', `socket,id=${QMP_CHARDEV},path=${escapeOptionValue(paths.qmpSocket)},server=on,wait=off`,
    '-mon', `chardev=${QMP_CHARDEV},mode=control`,
  ];
  // microvm's virtio-mmio transports default to legacy virtio, which vhost-user-fs refuses (as in qemu-args.ts).
  if (microvm && input.sharedFs) qemuArgs.push('-global', 'virtio-mmio.force-legacy=false');

  const devices: string[] = [
    // What libvirt would otherwise add, and microvm cannot have.
    "<controller type='usb' model='none'/>",
    memballoon(profile, mmio),
    `<serial type='unix'><source mode='bind' path='${x(paths.consoleSocket)}'/><target port='0'/></serial>`,
    `<controller type='virtio-serial' index='0'>${mmio}</controller>`,
    `<channel type='unix'><source mode='bind' path='${x(paths.agentSocket)}'/><target type='virtio' name='${AGENT_PORT_NAME}'/>` +
      "<address type='virtio-serial' controller='0' bus='0' port='1'/></channel>",
    `<controller type='scsi' index='0' model='virtio-scsi'>${mmio}</controller>`,
    `<rng model='virtio'><backend model='random'>/dev/urandom</backend>${mmio}</rng>`,
    "<panic model='isa'/>",
  ];
  if (profile.systemDisk) {
    devices.push(
      `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${x(profile.systemDisk)}'/>` +
      `<target dev='sda' bus='scsi'/><readonly/><serial>${SYSTEM_DISK_SERIAL}</serial>` +
      `<address type='drive' controller='0' bus='0' target='${SYSTEM_DISK_SCSI_ID}' unit='0'/></disk>`,
    );
  }
  if (input.sharedFs) {
    devices.push(
      `<filesystem type='mount'><driver type='virtiofs' queue='1024'/><source socket='${x(input.sharedFs.socket)}'/>` +
      `<target dir='${x(input.sharedFs.tag)}'/>${mmio}</filesystem>`,
    );
  }
  if (input.tap) devices.push(tapInterfaceXml(input.tap, mmio));
  return [
    `<domain type='${input.accel === 'kvm' ? 'kvm' : 'qemu'}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>`,
    `<name>${x(input.name)}</name>`,
    '<description>podvisor pod sandbox VM</description>',
    `<memory unit='MiB'>${profile.memoryMiB}</memory>`,
    // virtio-fs needs guest RAM that the virtiofsd process can map.
    input.sharedFs ? "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>" : '',
    `<vcpu>${profile.vcpus}</vcpu>`,
    `<os><type arch='x86_64' machine='${microvm ? 'microvm' : 'q35'}'>hvm</type>`,
    `<kernel>${x(profile.kernel)}</kernel>`,
    profile.initrd ? `<initrd>${x(profile.initrd)}</initrd>` : '',
    `<cmdline>${x(cmdline)}</cmdline></os>`,
    // Without <acpi/> libvirt passes -no-acpi, and microvm's guest then finds none of its virtio-mmio devices.
    `<features><acpi/>${tcgFeature(input)}</features>`,
    input.accel === 'kvm' ? "<cpu mode='host-passthrough'/>" : "<cpu mode='maximum'/>",
    // The guest reboots on panic (panic=-1): every way out ends the transient domain, and podvisor sees it go.
    '<on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>',
    `<devices>${devices.join('')}</devices>`,
    input.runAs ? dacLabel(input.runAs) : '',
    `<qemu:commandline>${qemuArgs.map((a) => `<qemu:arg value='${x(a)}'/>`).join('')}</qemu:commandline>`,
    '</domain>',
  ].join('\n');
}

/**
 * QEMU as this uid and gid, from podvisor's per-VM allocator (src/vm/confinement.ts), and
 * libvirt changes the owner of nothing (src/vm/libvirt/qemu-access.ts hands QEMU its files).
 */
function dacLabel(who: QemuIdentity): string {
  return `<seclabel type='static' model='dac' relabel='no'><label>+${who.uid}:+${who.gid}</label></seclabel>`;
}

/**
 * libvirt adds a PCI balloon unless told otherwise; with free-page reporting the QEMU
 * backend's virtio-balloon (on virtio-mmio under microvm), else none.
 */
function memballoon(profile: VmProfile, mmio: string): string {
  return profile.freePageReporting ? `<memballoon model='virtio' freePageReporting='on'>${mmio}</memballoon>` : "<memballoon model='none'/>";
}

/** The TCG translation cache size the QEMU backend sets with `-accel tcg,tb-size=` (libvirt 8.0+). */
function tcgFeature(input: DomainXmlInput): string {
  const mib = input.profile.tcgTbSizeMiB;
  return input.accel === 'tcg' && mib ? `<tcg><tb-cache unit='MiB'>${mib}</tb-cache></tcg>` : '';
}

/**
 * The pod NIC as the QEMU launcher makes it (virtio-net on the tap, the given MAC): an
 * existing tap that libvirt opens and hands to QEMU without creating, configuring or
 * deleting it (`managed='no'`). podvisor moves it into the pod netns afterwards
 * (src/network/host-tap.ts); QEMU's fd follows it there.
 */
export function tapInterfaceXml(tap: { name: string; mac?: string }, mmio: string): string {
  const x = escapeXml;
  return `<interface type='ethernet'>${tap.mac ? `<mac address='${x(tap.mac)}'/>` : ''}<target dev='${x(tap.name)}' managed='no'/>` +
    `<model type='virtio'/>${mmio}</interface>`;
}

function escapeXml(s: string): string {
  return s.replace(/[&<>'"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', "'": '&apos;', '"': '&quot;' })[c]!);
}

