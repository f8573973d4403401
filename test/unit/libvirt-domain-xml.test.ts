import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildDomainXml, domainName } from '../../src/vm/libvirt/domain-xml.js';
import { withProfileDefaults } from '../../src/vm/profile.js';
import { runDirPaths } from '../../src/vm/run-dir.js';

/** The libvirt domain XML from a VM profile (src/vm/libvirt/domain-xml.ts); the e2e is test/vm/libvirt-backend.test.ts. */
describe('libvirt domain XML', () => {
  const paths = runDirPaths('/run/pv/vms/abc');
  const profile = withProfileDefaults({ kernel: '/g/vmlinux', initrd: '/g/initrd.img', systemDisk: '/g/system.erofs', vcpus: 2, memoryMiB: 768, kernelArgs: ["x='<y>'"] });
  const xml = (over: Partial<Parameters<typeof buildDomainXml>[0]> = {}) =>
    buildDomainXml({ name: domainName('abc'), profile, paths, accel: 'tcg', tscKhz: 2000000, ...over });

  test('microvm: every virtio device on virtio-mmio, ACPI on, nothing that implies PCI', () => {
    const x = xml();
    assert.match(x, /<name>podvisor-abc<\/name>/);
    assert.match(x, /machine='microvm'/);
    assert.match(x, /<features><acpi\/><\/features>/);
    assert.match(x, /<controller type='usb' model='none'\/>/);
    assert.match(x, /<memballoon model='none'\/>/);
    assert.equal(x.match(/<address type='virtio-mmio'\/>/g)?.length, 3, 'virtio-serial, virtio-scsi, virtio-rng');
    assert.match(x, /<memory unit='MiB'>768<\/memory>/);
    assert.match(x, /<vcpu>2<\/vcpu>/);
  });

  test('domain type follows the accelerator: qemu under TCG, kvm with KVM', () => {
    assert.match(xml(), /<domain type='qemu'/);
    assert.match(xml(), /<cpu mode='maximum'\/>/);
    assert.match(xml({ accel: 'kvm' }), /<domain type='kvm'/);
    assert.match(xml({ accel: 'kvm' }), /<cpu mode='host-passthrough'\/>/);
  });

  test('the agent port, console, system disk and podvisor\'s QMP monitor are the QEMU backend\'s', () => {
    const x = xml();
    assert.match(x, /<channel type='unix'><source mode='bind' path='\/run\/pv\/vms\/abc\/agent.sock'\/><target type='virtio' name='podvisor.agent'\/>/);
    assert.match(x, /<serial type='unix'><source mode='bind' path='\/run\/pv\/vms\/abc\/console.sock'\/>/);
    assert.match(x, /<serial>podvisor-system<\/serial><address type='drive' controller='0' bus='0' target='0' unit='0'\/>/);
    assert.match(x, /<qemu:arg value='socket,id=podvisor-qmp,path=\/run\/pv\/vms\/abc\/qmp.sock,server=on,wait=off'\/>/);
    assert.match(x, /<on_reboot>destroy<\/on_reboot>/);
  });

  test('kernel arguments are escaped for XML', () => {
    assert.match(xml(), /x=&apos;&lt;y&gt;&apos;<\/cmdline>/);
  });

  test('a virtio-fs share: shared memfd RAM, the external virtiofsd socket, modern virtio-mmio', () => {
    const x = xml({ sharedFs: { socket: '/run/pv/volumes/abc/vfs.sock', tag: 'pvshare' } });
    assert.match(x, /<memoryBacking><source type='memfd'\/><access mode='shared'\/><\/memoryBacking>/);
    assert.match(x, /<filesystem type='mount'><driver type='virtiofs' queue='1024'\/><source socket='\/run\/pv\/volumes\/abc\/vfs.sock'\/><target dir='pvshare'\/>/);
    assert.match(x, /virtio-mmio.force-legacy=false/);
  });

  test('a pod NIC: libvirt opens the named tap without managing it, virtio on its own virtio-mmio slot, the given MAC', () => {
    const x = xml({ tap: { name: 'pvt0123456789ab', mac: '02:00:00:00:00:01' } });
    assert.match(x, /<interface type='ethernet'><mac address='02:00:00:00:00:01'\/><target dev='pvt0123456789ab' managed='no'\/><model type='virtio'\/><address type='virtio-mmio'\/><\/interface>/);
    assert.equal(x.match(/<address type='virtio-mmio'\/>/g)?.length, 4);
    assert.doesNotMatch(xml(), /<interface/, 'no NIC without a tap');
  });

  test('q35 leaves device addresses to libvirt', () => {
    const x = buildDomainXml({ name: 'n', profile: { ...profile, machine: 'q35' }, paths, accel: 'tcg', tscKhz: 1 });
    assert.match(x, /machine='q35'/);
    assert.doesNotMatch(x, /virtio-mmio/);
  });

  test('what the libvirt backend cannot do is refused with the reason', () => {
    assert.throws(() => xml({ profile: { ...profile, memory: { kind: 'file', memPath: '/t', share: false } } }), /UNIMPLEMENTED|cannot start a VM from a template/);
    assert.throws(() => xml({ profile: { ...profile, qemuBinary: '/opt/qemu' } }), /qemuBinary is not used there/);
  });

  test('QEMU runs as the VM\'s own uid and gid, and libvirt relabels nothing', () => {
    assert.match(xml({ runAs: { uid: 1100007, gid: 1100007 } }), /<seclabel type='static' model='dac' relabel='no'><label>\+1100007:\+1100007<\/label><\/seclabel>/);
    assert.doesNotMatch(xml(), /<seclabel/);
  });

  test('the TCG translation cache size is the profile\'s (tcg_tb_size_mib), under TCG only', () => {
    const sized = { ...profile, tcgTbSizeMiB: 32 };
    assert.match(xml({ profile: sized }), /<features><acpi\/><tcg><tb-cache unit='MiB'>32<\/tb-cache><\/tcg><\/features>/);
    assert.doesNotMatch(xml({ profile: sized, accel: 'kvm' }), /<tcg>/);
    assert.doesNotMatch(xml(), /<tcg>/);
  });

  test('free-page reporting is the QEMU backend\'s virtio-balloon, on virtio-mmio under microvm', () => {
    assert.match(xml({ profile: { ...profile, freePageReporting: true } }), /<memballoon model='virtio' freePageReporting='on'><address type='virtio-mmio'\/><\/memballoon>/);
    assert.match(xml(), /<memballoon model='none'\/>/);
  });
});
