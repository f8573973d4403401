import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tscKhzFromCpuinfo, tscKhzFromKernelLog } from '../../src/vm/host.js';
import { validateProfile, withProfileDefaults } from '../../src/vm/profile.js';
import { AGENT_PORT_NAME, buildQemuArgs, TEMPLATE_NIC_MAC, type QemuArgsInput } from '../../src/vm/qemu-args.js';
import { escapeOptionValue } from '../../src/vm/qemu-option.js';
import { runDirPaths } from '../../src/vm/run-dir.js';

function input(over: Partial<QemuArgsInput> = {}): QemuArgsInput {
  return {
    id: 'abcdef0123',
    profile: withProfileDefaults({ kernel: '/g/vmlinux', initrd: '/g/initrd.img', systemDisk: '/g/system.erofs', kernelArgs: ['podvisor.debug=1'] }),
    paths: runDirPaths('/run/pv/abcdef0123'),
    accel: 'tcg',
    tscKhz: 2096004,
    sandbox: true,
    ...over,
  };
}

/** The value following each occurrence of `flag`. */
function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]] : []));
}

describe('QEMU command line', () => {
  it('uses microvm with virtio-mmio devices, TCG and the hardening flags', () => {
    const args = buildQemuArgs(input());
    assert.deepEqual(values(args, '-M'), ['microvm,x-option-roms=off,isa-serial=on,rtc=on']);
    assert.deepEqual(values(args, '-accel'), ['tcg']);
    assert.deepEqual(values(args, '-cpu'), ['max']);
    for (const flag of ['-nodefaults', '-no-user-config', '-nographic', '-no-reboot']) assert.ok(args.includes(flag), flag);
    assert.deepEqual(values(args, '-sandbox'), ['on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny']);
    const devices = values(args, '-device');
    assert.deepEqual(devices.map((d) => d.split(',')[0]), [
      'virtio-serial-device', 'virtserialport', 'virtio-scsi-device', 'virtio-rng-device', 'pvpanic', 'scsi-hd',
    ]);
  });

  it('sizes the TCG translation cache and adds the free-page-reporting balloon only when the profile asks', () => {
    const base = input().profile;
    const tuned = buildQemuArgs(input({ profile: { ...base, tcgTbSizeMiB: 32, freePageReporting: true } }));
    assert.deepEqual(values(tuned, '-accel'), ['tcg,tb-size=32']);
    assert.equal(values(tuned, '-device').filter((d) => d.startsWith('virtio-balloon-device,')).length, 1);
    assert.match(values(tuned, '-device').find((d) => d.startsWith('virtio-balloon-device'))!, /free-page-reporting=on/);
    // KVM has no translation cache: the size is not passed there.
    assert.deepEqual(values(buildQemuArgs(input({ accel: 'kvm', profile: { ...base, tcgTbSizeMiB: 32 } })), '-accel'), ['kvm']);
    assert.ok(!buildQemuArgs(input()).some((a) => a.includes('balloon')));
    assert.throws(() => validateProfile({ ...base, tcgTbSizeMiB: 0 }), /tcgTbSizeMiB/);
  });

  it('names the process after the sandbox and puts every host file in the run directory', () => {
    const args = buildQemuArgs(input());
    assert.deepEqual(values(args, '-name'), ['abcdef0123,process=podvisor-abcdef,debug-threads=on']);
    assert.deepEqual(values(args, '-pidfile'), ['/run/pv/abcdef0123/qemu.pid']);
    const chardevs = values(args, '-chardev');
    assert.ok(chardevs.includes('socket,id=console,path=/run/pv/abcdef0123/console.sock,server=on,wait=off'), 'the console is a socket podvisord reads into a capped ring');
    assert.ok(chardevs.includes('socket,id=qmp,path=/run/pv/abcdef0123/qmp.sock,server=on,wait=off'));
    assert.ok(chardevs.includes('socket,id=agent,path=/run/pv/abcdef0123/agent.sock,server=on,wait=off'));
    assert.ok(values(args, '-device').includes(`virtserialport,bus=vser0.0,nr=1,chardev=agent,id=agent-port,name=${AGENT_PORT_NAME}`));
    assert.deepEqual(values(args, '-mon'), ['chardev=qmp,mode=control']);
  });

  it('builds the kernel command line: TSC frequency, no crypto self-tests, quiet, then the profile', () => {
    const args = buildQemuArgs(input());
    assert.deepEqual(values(args, '-append'), ['console=ttyS0 tsc_early_khz=2096004 cryptomgr.notests=1 quiet panic=-1 podvisor.debug=1']);
    assert.deepEqual(values(args, '-kernel'), ['/g/vmlinux']);
    assert.deepEqual(values(args, '-initrd'), ['/g/initrd.img']);
  });

  it('attaches the system disk read-only as SCSI target 0', () => {
    const args = buildQemuArgs(input());
    assert.deepEqual(values(args, '-blockdev'), [
      'driver=file,node-name=system-file,filename=/g/system.erofs,read-only=on',
      'driver=raw,node-name=system,file=system-file,read-only=on',
    ]);
    assert.ok(values(args, '-device').some((d) => d.startsWith('scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun=0,drive=system')));
  });

  it('uses KVM with the host CPU when asked', () => {
    const args = buildQemuArgs(input({ accel: 'kvm' }));
    assert.deepEqual(values(args, '-accel'), ['kvm']);
    assert.deepEqual(values(args, '-cpu'), ['host']);
  });

  it('uses PCI devices on q35', () => {
    const args = buildQemuArgs(input({ profile: { ...input().profile, machine: 'q35' } }));
    assert.deepEqual(values(args, '-M'), ['q35']);
    const kinds = values(args, '-device').map((d) => d.split(',')[0]);
    assert.ok(kinds.includes('virtio-serial-pci') && kinds.includes('virtio-scsi-pci') && kinds.includes('virtio-rng-pci'));
  });

  it('adds a virtio-net NIC on the tap last among the virtio devices', () => {
    const args = buildQemuArgs(input({ tap: { name: 'tap0', mac: '02:00:00:00:00:01' } }));
    assert.deepEqual(values(args, '-netdev'), ['tap,id=net0,ifname=tap0,script=no,downscript=no']);
    assert.ok(values(args, '-device').includes('virtio-net-device,netdev=net0,id=nic0,mac=02:00:00:00:00:01'));
  });

  it('gives a template a placeholder NIC whose device equals the tap NIC of its clones', () => {
    const template = buildQemuArgs(input({ placeholderNic: true }));
    const clone = buildQemuArgs(input({ tap: { name: 'tap0', mac: TEMPLATE_NIC_MAC } }));
    assert.deepEqual(values(template, '-netdev'), ['hubport,id=net0,hubid=0']);
    assert.deepEqual(values(template, '-device'), values(clone, '-device'));
    assert.throws(() => buildQemuArgs(input({ placeholderNic: true, tap: { name: 'tap0' } })), { code: 'INVALID_ARGUMENT' });
  });

  it('prepares template RAM in a file and deferred incoming migration', () => {
    const profile = { ...input().profile, memory: { kind: 'file' as const, memPath: '/dev/shm/tpl.ram', share: true } };
    const args = buildQemuArgs(input({ profile, incomingDefer: true }));
    assert.deepEqual(values(args, '-M'), ['microvm,x-option-roms=off,isa-serial=on,rtc=on,memory-backend=ram0']);
    assert.deepEqual(values(args, '-object').filter((o) => o.startsWith('memory-backend-file')), [
      'memory-backend-file,id=ram0,size=512M,mem-path=/dev/shm/tpl.ram,share=on',
    ]);
    assert.deepEqual(values(args, '-incoming'), ['defer']);
  });

  it('is deterministic: equal profiles in different run directories give the same devices', () => {
    const a = buildQemuArgs(input());
    const b = buildQemuArgs(input({ id: 'other', paths: runDirPaths('/elsewhere/other') }));
    assert.deepEqual(values(a, '-device'), values(b, '-device'));
  });

  it('starts paused (-S) so podvisord watches QMP and the console before the guest runs', () => {
    assert.ok(buildQemuArgs(input()).includes('-S'));
  });

  it('drops to the VM\'s uid with -runas, which needs set*id allowed by the filter', () => {
    const args = buildQemuArgs(input({ runAs: { uid: 1100007, gid: 1100007 } }));
    assert.deepEqual(values(args, '-runas'), ['1100007:1100007']);
    assert.deepEqual(values(args, '-sandbox'), ['on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny']);
    assert.equal(buildQemuArgs(input()).includes('-runas'), false);
  });

  it('leaves out -sandbox where QEMU lacks seccomp', () => {
    assert.equal(buildQemuArgs(input({ sandbox: false })).includes('-sandbox'), false);
  });

  it('doubles commas in option values', () => {
    assert.equal(escapeOptionValue('/a,b/c'), '/a,,b/c');
    const args = buildQemuArgs(input({ paths: runDirPaths('/run/a,b') }));
    assert.ok(values(args, '-chardev').includes('socket,id=qmp,path=/run/a,,b/qmp.sock,server=on,wait=off'));
  });

  it('refuses a run directory whose socket paths exceed sun_path', () => {
    assert.throws(() => runDirPaths(`/tmp/${'x'.repeat(100)}`), { code: 'INVALID_ARGUMENT', message: /exceeds 107 bytes/ });
  });
});

describe('VM profile validation', () => {
  const ok = withProfileDefaults({ kernel: '/k' });
  it('accepts the defaults', () => validateProfile(ok));
  it('rejects bad sizes, machines and kernel arguments', () => {
    assert.throws(() => validateProfile({ ...ok, vcpus: 0 }), { code: 'INVALID_ARGUMENT', message: /vcpus/ });
    assert.throws(() => validateProfile({ ...ok, memoryMiB: 32 }), { code: 'INVALID_ARGUMENT', message: /memoryMiB/ });
    assert.throws(() => validateProfile({ ...ok, machine: 'pc' as never }), { code: 'INVALID_ARGUMENT', message: /machine/ });
    assert.throws(() => validateProfile({ ...ok, kernelArgs: ['a\nb'] }), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => validateProfile({ ...ok, kernel: '' }), { code: 'INVALID_ARGUMENT' });
  });
});

describe('host TSC frequency', () => {
  it('prefers the refined calibration in the kernel log', () => {
    const log = '[0.0] tsc: Detected 2096.004 MHz processor\n[1.2] tsc: Refined TSC clocksource calibration: 2095.998 MHz\n';
    assert.equal(tscKhzFromKernelLog(log), 2095998);
    assert.equal(tscKhzFromKernelLog('[0.0] tsc: Detected 2096.004 MHz processor'), 2096004);
    assert.equal(tscKhzFromKernelLog('nothing'), undefined);
  });
  it('falls back to cpu MHz from /proc/cpuinfo', () => {
    assert.equal(tscKhzFromCpuinfo('model name\t: AMD EPYC\ncpu MHz\t\t: 2096.004\n'), 2096004);
    assert.equal(tscKhzFromCpuinfo('cpu MHz\t\t: 3000\n'), 3000000);
    assert.equal(tscKhzFromCpuinfo('no'), undefined);
  });
});

describe('shared filesystem (virtio-fs)', () => {
  it('adds the vhost-user-fs device and shares guest RAM through memfd', () => {
    const args = buildQemuArgs(input({ sharedFs: { socket: '/run/pv/x/virtiofs.sock', tag: 'podvisor' } }));
    assert.ok(values(args, '-chardev').includes('socket,id=fs0,path=/run/pv/x/virtiofs.sock'));
    assert.ok(values(args, '-device').includes('vhost-user-fs-device,chardev=fs0,id=fs0dev,tag=podvisor'));
    assert.ok(values(args, '-object').includes('memory-backend-memfd,id=ram0,size=512M,share=on'));
    assert.deepEqual(values(args, '-M'), ['microvm,x-option-roms=off,isa-serial=on,rtc=on,memory-backend=ram0']);
    // vhost-user-fs (libvhost-user) refuses legacy virtio, microvm's virtio-mmio default.
    assert.deepEqual(values(args, '-global'), ['virtio-mmio.force-legacy=false']);
    assert.deepEqual(values(buildQemuArgs(input()), '-global'), []);
  });
  it('refuses virtio-fs with private (template clone) RAM', () => {
    const profile = { ...input().profile, memory: { kind: 'file' as const, memPath: '/dev/shm/t', share: false } };
    assert.throws(() => buildQemuArgs(input({ profile, sharedFs: { socket: '/s', tag: 't' } })), { code: 'INVALID_ARGUMENT', message: /shared guest RAM/ });
  });
});
