import { invalidArgument } from '../errors.js';
import type { VmProfile } from './profile.js';
import { escapeOptionValue } from './qemu-option.js';
import type { RunDirPaths } from './run-dir.js';

/**
 * Builds the QEMU command line for one VM. A pure function of its input, so that equal
 * profiles give equal device sets in equal order: a saved template VM can only be restored
 * into a QEMU whose devices match it one for one.
 */

/** The agent's virtio-serial port name; the guest agent looks for it in /sys/class/virtio-ports. */
export const AGENT_PORT_NAME = 'podvisor.agent';
/** The QEMU device id of that port: QMP names it in VSERPORT_CHANGE when the guest opens it. */
export const AGENT_PORT_ID = 'agent-port';
/** QEMU ids of the fixed devices; hot-plug uses the bus names. */
export const SCSI_CONTROLLER_ID = 'scsi0';
export const SCSI_BUS = `${SCSI_CONTROLLER_ID}.0`;
export const SYSTEM_DISK_SERIAL = 'podvisor-system';
/** SCSI target of the boot-time system disk; hot-plugged disks take the targets after it. */
export const SYSTEM_DISK_SCSI_ID = 0;
/**
 * The MAC of a template VM's NIC (locally administered). Migration carries the device's MAC,
 * so every clone's NIC starts with it; the guest then takes its pod's MAC (ConfigureNetwork).
 */
export const TEMPLATE_NIC_MAC = '02:70:76:00:00:01';

export interface TapDevice {
  /** Name of an existing tap interface (in the VM's netns when one is given). */
  name: string;
  mac?: string;
}

/** A virtio-fs share served by a vhost-user daemon (virtiofsd) on a unix socket. */
export interface SharedFs {
  socket: string;
  /** Mount tag the guest uses: `mount -t virtiofs <tag> <dir>`. */
  tag: string;
}

export interface QemuArgsInput {
  id: string;
  profile: VmProfile;
  paths: RunDirPaths;
  accel: 'kvm' | 'tcg';
  tscKhz: number;
  /** Whether this QEMU build has seccomp (`-sandbox`). */
  sandbox: boolean;
  tap?: TapDevice;
  /**
   * The same NIC device as `tap` gives, with a backend that carries nothing (a hub port with
   * no peer): a template VM's. Migration carries the device's state, not its backend, so
   * the template's clones put their pod's tap behind the device instead.
   */
  placeholderNic?: boolean;
  sharedFs?: SharedFs;
  /** Start paused, waiting for `migrate-incoming` (VM template clones). */
  incomingDefer?: boolean;
  /** Drop to this uid:gid (`-runas`) once the command line's files are open, before the guest runs. */
  runAs?: { uid: number; gid: number };
}

/** podvisor's kernel arguments; the profile's own follow and may override them (last wins). */
export function baseKernelArgs(tscKhz: number): string[] {
  return [
    'console=ttyS0',
    // No PIT/HPET calibration on microvm: without this some boots hang.
    `tsc_early_khz=${tscKhz}`,
    'cryptomgr.notests=1',
    'quiet',
    // A panic reboots at once; with -no-reboot QEMU then exits and the crash is seen.
    'panic=-1',
  ];
}

export function buildQemuArgs(input: QemuArgsInput): string[] {
  const { id, profile, paths, accel } = input;
  const e = escapeOptionValue;
  const microvm = profile.machine === 'microvm';
  // microvm has virtio-mmio only; q35 takes the PCI flavour of the same devices.
  const virtio = (kind: string) => (microvm ? `virtio-${kind}-device` : `virtio-${kind}-pci`);
  const ramBackend = memoryBackend(input);

  const machineOpts = microvm
    ? ['microvm', 'x-option-roms=off', 'isa-serial=on', 'rtc=on']
    : ['q35'];
  if (ramBackend) machineOpts.push('memory-backend=ram0');

  const args: string[] = [
    // debug-threads names the vCPU threads "CPU n/TCG|KVM": per-VM vCPU time (metrics, inspect) reads them.
    '-name', `${e(id)},process=podvisor-${id.slice(0, 6)},debug-threads=on`,
    '-M', machineOpts.join(','),
    '-accel', accel === 'tcg' && profile.tcgTbSizeMiB ? `tcg,tb-size=${profile.tcgTbSizeMiB}` : accel,
    '-cpu', accel === 'kvm' ? 'host' : 'max',
    '-smp', String(profile.vcpus),
    '-m', `${profile.memoryMiB}M`,
  ];
  if (ramBackend) args.push('-object', ramBackend);
  args.push(
    '-nodefaults', '-no-user-config', '-nographic',
    // Guest reboot (and panic, through panic=-1) ends the VM instead of looping.
    '-no-reboot',
    // The guest starts only when podvisord says `cont`: by then it reads the console and
    // watches QMP, so no early console line or STOP event is missed.
    '-S',
  );
  if (input.sandbox) {
    // QEMU installs the filter before -runas calls setgid/setuid, so with -runas set*id must
    // stay allowed; after the drop the process has no capabilities and no_new_privs, and its
    // real, effective and saved uids are all the VM's, so set*id cannot gain anything back.
    const setid = input.runAs ? 'allow' : 'deny';
    args.push('-sandbox', `on,obsolete=deny,elevateprivileges=${setid},spawn=deny,resourcecontrol=deny`);
  }
  if (input.runAs) args.push('-runas', `${input.runAs.uid}:${input.runAs.gid}`);

  args.push('-kernel', profile.kernel);
  if (profile.initrd) args.push('-initrd', profile.initrd);
  args.push('-append', [...baseKernelArgs(input.tscKhz), ...profile.kernelArgs].join(' '));

  args.push(
    // The console is served on a socket that podvisord reads into a capped ring (src/vm/console-log.ts).
    '-chardev', `socket,id=console,path=${e(paths.consoleSocket)},server=on,wait=off`,
    '-serial', 'chardev:console',
    '-chardev', `socket,id=qmp,path=${e(paths.qmpSocket)},server=on,wait=off`,
    '-mon', 'chardev=qmp,mode=control',
    '-pidfile', paths.pidFile,
  );

  // Fixed order: on microvm each -device takes the next virtio-mmio slot.
  args.push(
    '-device', `${virtio('serial')},id=vser0`,
    '-chardev', `socket,id=agent,path=${e(paths.agentSocket)},server=on,wait=off`,
    '-device', `virtserialport,bus=vser0.0,nr=1,chardev=agent,id=${AGENT_PORT_ID},name=${AGENT_PORT_NAME}`,
    '-device', `${virtio('scsi')},id=${SCSI_CONTROLLER_ID}`,
    '-object', 'rng-random,id=rng0,filename=/dev/urandom',
    '-device', `${virtio('rng')},rng=rng0,id=rng`,
    '-device', 'pvpanic,id=pvpanic',
  );
  // After the fixed devices, so a profile without it keeps the same virtio-mmio slots as before.
  if (profile.freePageReporting) args.push('-device', `${virtio('balloon')},id=balloon0,free-page-reporting=on`);
  if (input.tap && input.placeholderNic) throw invalidArgument('a VM has either a tap NIC or a placeholder NIC, not both');
  if (input.tap || input.placeholderNic) {
    const nic = [`${virtio('net')}`, 'netdev=net0', 'id=nic0'];
    const mac = input.placeholderNic ? TEMPLATE_NIC_MAC : input.tap?.mac;
    if (mac) nic.push(`mac=${mac}`);
    args.push(
      '-netdev', input.tap ? `tap,id=net0,ifname=${e(input.tap.name)},script=no,downscript=no` : 'hubport,id=net0,hubid=0',
      '-device', nic.join(','),
    );
  }
  if (input.sharedFs) {
    // microvm's virtio-mmio transports default to legacy virtio, which vhost-user-fs (libvhost-user) refuses.
    if (microvm) args.push('-global', 'virtio-mmio.force-legacy=false');
    args.push(
      '-chardev', `socket,id=fs0,path=${e(input.sharedFs.socket)}`,
      '-device', `${microvm ? 'vhost-user-fs-device' : 'vhost-user-fs-pci'},chardev=fs0,id=fs0dev,tag=${e(input.sharedFs.tag)}`,
    );
  }
  if (profile.systemDisk) {
    args.push(
      '-blockdev', `driver=file,node-name=system-file,filename=${e(profile.systemDisk)},read-only=on`,
      '-blockdev', 'driver=raw,node-name=system,file=system-file,read-only=on',
      '-device', `scsi-hd,bus=${SCSI_BUS},channel=0,scsi-id=${SYSTEM_DISK_SCSI_ID},lun=0,drive=system,id=system-disk,serial=${SYSTEM_DISK_SERIAL}`,
    );
  }
  if (input.incomingDefer) args.push('-incoming', 'defer');
  return args;
}

/**
 * The `-object` for guest RAM, when it is not plain anonymous memory: a file for VM templates,
 * or shared memfd RAM when a vhost-user device (virtio-fs) must map it from another process.
 */
function memoryBackend(input: QemuArgsInput): string | undefined {
  const { profile } = input;
  const size = `size=${profile.memoryMiB}M`;
  const mem = profile.memory ?? { kind: 'anonymous' };
  if (mem.kind === 'file') {
    if (input.sharedFs && !mem.share) {
      throw invalidArgument('a shared filesystem (virtio-fs) needs shared guest RAM; file-backed memory with share=false cannot have one');
    }
    return ['memory-backend-file', 'id=ram0', size, `mem-path=${escapeOptionValue(mem.memPath)}`, `share=${mem.share ? 'on' : 'off'}`].join(',');
  }
  if (input.sharedFs) return ['memory-backend-memfd', 'id=ram0', size, 'share=on'].join(',');
  return undefined;
}
