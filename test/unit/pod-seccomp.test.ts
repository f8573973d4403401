import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isPodvisorError } from '../../src/errors.js';
import { appArmorProfileFromName, containerConfigFromCri, seccompProfileFromPath } from '../../src/cri/containers.js';
import type { ContainerConfig__Output } from '../../src/cri/generated/runtime/v1/ContainerConfig.js';
import { buildOciSpec, DEFAULT_CAPABILITIES, validateContainerConfig } from '../../src/pod/oci-spec.js';
import type { ContainerSecurity } from '../../src/pod/records.js';
import {
  loadContainerSeccomp, ociSeccomp, parseSeccompProfile,
} from '../../src/pod/seccomp.js';
import type { OciSeccomp } from '../../src/pod/oci-seccomp.js';
import { defaultSeccompProfile, seccompArchitectures } from '../../src/pod/seccomp-default.js';
import { containerConfig, sandboxConfig } from '../helpers/pod-records.js';

function withSecurity(over: Partial<ContainerSecurity>) {
  const c = containerConfig();
  c.security = { ...c.security, ...over };
  return c;
}

function deniedNames(p: OciSeccomp): string[] {
  return (p.syscalls ?? []).filter((r) => r.action === 'SCMP_ACT_ERRNO' && !r.args).flatMap((r) => r.names);
}

describe('seccomp: the CRI setting', () => {
  test('the deprecated seccomp_profile_path strings map to profiles', () => {
    assert.equal(seccompProfileFromPath(''), undefined);
    assert.deepEqual(seccompProfileFromPath('runtime/default'), { type: 'RuntimeDefault', localhostRef: '' });
    assert.deepEqual(seccompProfileFromPath('docker/default'), { type: 'RuntimeDefault', localhostRef: '' });
    assert.deepEqual(seccompProfileFromPath('unconfined'), { type: 'Unconfined', localhostRef: '' });
    assert.deepEqual(seccompProfileFromPath('localhost//var/lib/kubelet/seccomp/a.json'), { type: 'Localhost', localhostRef: '/var/lib/kubelet/seccomp/a.json' });
    assert.throws(() => seccompProfileFromPath('strict'), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /"strict"/.test(e.message));
  });

  test('CRI conversion: unset stays unset, an empty message is RuntimeDefault, the new field wins over the old string', () => {
    const cri = (sc: Record<string, unknown>) => containerConfigFromCri({
      metadata: { name: 'a', attempt: 0 }, image: { image: 'busybox' }, command: [], args: [], working_dir: '', envs: [], mounts: [],
      devices: [], CDI_devices: [], labels: {}, annotations: {}, log_path: '', stdin: false, stdin_once: false, tty: false, stop_signal: 'RUNTIME_DEFAULT',
      linux: {
        security_context: {
          masked_paths: [], readonly_paths: [], supplemental_groups: [], seccomp: null, apparmor: null, seccomp_profile_path: '', apparmor_profile: '', ...sc,
        },
      },
    } as unknown as ContainerConfig__Output).security;
    const unset = cri({});
    assert.equal(unset.seccomp, undefined);
    assert.equal(unset.apparmor, undefined);
    assert.deepEqual(cri({ seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' } }).seccomp, { type: 'RuntimeDefault', localhostRef: '' });
    assert.deepEqual(cri({ seccomp: { profile_type: 2, localhost_ref: '/p.json' } }).seccomp, { type: 'Localhost', localhostRef: '/p.json' });
    assert.deepEqual(cri({ seccomp_profile_path: 'localhost//p.json' }).seccomp, { type: 'Localhost', localhostRef: '/p.json' });
    assert.deepEqual(cri({ seccomp: { profile_type: 'Unconfined', localhost_ref: '' }, seccomp_profile_path: 'runtime/default' }).seccomp,
      { type: 'Unconfined', localhostRef: '' });
    assert.deepEqual(cri({ apparmor_profile: 'localhost/my-profile' }).apparmor, { type: 'Localhost', localhostRef: 'my-profile' });
  });
});

describe('seccomp: loading', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'pvs-unit-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const localhost = (file: string, over: Partial<ContainerSecurity> = {}) =>
    withSecurity({ seccomp: { type: 'Localhost', localhostRef: file }, ...over });

  test('unset, Unconfined and privileged mean no filter; RuntimeDefault is the default profile', async () => {
    assert.deepEqual(await loadContainerSeccomp(containerConfig()), { kind: 'unconfined' });
    assert.deepEqual(await loadContainerSeccomp(withSecurity({ seccomp: { type: 'Unconfined', localhostRef: '' } })), { kind: 'unconfined' });
    assert.deepEqual(await loadContainerSeccomp(withSecurity({ seccomp: { type: 'RuntimeDefault', localhostRef: '' } })), { kind: 'runtime-default' });
    // containerd does not even read the file of a privileged container.
    assert.deepEqual(await loadContainerSeccomp(localhost('/nonexistent/p.json', { privileged: true })), { kind: 'unconfined' });
  });

  test('a Localhost profile is read from the host and keeps only OCI fields', async () => {
    const file = join(dir, 'block-chmod.json');
    writeFileSync(file, JSON.stringify({
      defaultAction: 'SCMP_ACT_ALLOW',
      archMap: [{ architecture: 'SCMP_ARCH_X86_64' }],
      comment: 'dropped',
      syscalls: [{ names: ['chmod', 'fchmodat'], action: 'SCMP_ACT_ERRNO', comment: 'dropped too' }],
    }));
    assert.deepEqual(await loadContainerSeccomp(localhost(file)), {
      kind: 'profile', file, profile: { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['chmod', 'fchmodat'], action: 'SCMP_ACT_ERRNO' }] },
    });
  });

  test('missing, relative, unreadable, oversized and invalid profiles fail naming the file', async () => {
    const missing = join(dir, 'missing.json');
    await assert.rejects(loadContainerSeccomp(localhost(missing)), (e) => isPodvisorError(e, 'NOT_FOUND') && e.message.includes(missing));
    await assert.rejects(loadContainerSeccomp(localhost('profiles/a.json')), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /absolute/.test(e.message));
    await assert.rejects(loadContainerSeccomp(localhost('')), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /localhost_ref/.test(e.message));
    const folder = join(dir, 'folder.json');
    mkdirSync(folder);
    await assert.rejects(loadContainerSeccomp(localhost(folder)), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && e.message.includes(folder));
    const big = join(dir, 'big.json');
    writeFileSync(big, ' '.repeat(1024 * 1024 + 1));
    await assert.rejects(loadContainerSeccomp(localhost(big)), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /larger/.test(e.message));
    const broken = join(dir, 'broken.json');
    writeFileSync(broken, '{"defaultAction": ');
    await assert.rejects(loadContainerSeccomp(localhost(broken)), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && e.message.includes(broken) && /JSON/.test(e.message));
    if (process.getuid?.() !== 0) {
      const secret = join(dir, 'secret.json');
      writeFileSync(secret, '{}');
      chmodSync(secret, 0);
      await assert.rejects(loadContainerSeccomp(localhost(secret)), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /cannot be read/.test(e.message));
    }
  });

  test('profile validation: defaultAction, rules, arguments, notify', () => {
    const bad = (doc: unknown, pattern: RegExp, code: 'INVALID_ARGUMENT' | 'UNIMPLEMENTED' = 'INVALID_ARGUMENT') =>
      assert.throws(() => parseSeccompProfile(JSON.stringify(doc), '/p.json'),
        (e) => isPodvisorError(e, code) && e.message.startsWith('seccomp profile /p.json') && pattern.test(e.message));
    bad([], /not a JSON object/);
    bad({}, /defaultAction undefined/);
    bad({ defaultAction: 'ALLOW' }, /defaultAction "ALLOW" is not a seccomp action/);
    bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: {} }, /syscalls is not a list/);
    bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: [], action: 'SCMP_ACT_ERRNO' }] }, /syscalls\[0\]\.names is empty/);
    bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ name: 'chmod', action: 'SCMP_ACT_ERRNO' }] }, /syscalls\[0\]\.names must be a list/);
    bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['x'], action: 'SCMP_ACT_ERRNO', args: [{ index: 6, value: 1, op: 'SCMP_CMP_EQ' }] }] }, /index 6 is out of range/);
    bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['x'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 1, op: 'EQ' }] }] }, /op "EQ"/);
    bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['x'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 2 ** 60, op: 'SCMP_CMP_EQ' }] }] }, /below 2\^53/);
    bad({ defaultAction: 'SCMP_ACT_ALLOW', listenerPath: '/run/agent.sock' }, /listenerPath/, 'UNIMPLEMENTED');
    bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['x'], action: 'SCMP_ACT_NOTIFY' }] }, /SCMP_ACT_NOTIFY/, 'UNIMPLEMENTED');
    assert.deepEqual(parseSeccompProfile(JSON.stringify({
      defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 38, architectures: ['SCMP_ARCH_X86_64'], flags: ['SECCOMP_FILTER_FLAG_LOG'],
      syscalls: [{ names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 8, valueTwo: 0, op: 'SCMP_CMP_EQ' }] }],
    }), '/p.json'), {
      defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 38, architectures: ['SCMP_ARCH_X86_64'], flags: ['SECCOMP_FILTER_FLAG_LOG'],
      syscalls: [{ names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 8, valueTwo: 0, op: 'SCMP_CMP_EQ' }] }],
    });
  });
});

describe('seccomp: the default profile', () => {
  test('allows by default and denies the dangerous groups for an ordinary container', () => {
    const p = defaultSeccompProfile(DEFAULT_CAPABILITIES, 'x64');
    assert.equal(p.defaultAction, 'SCMP_ACT_ALLOW');
    assert.deepEqual(p.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
    const denied = deniedNames(p);
    for (const s of ['kexec_load', 'init_module', 'reboot', 'mount', 'umount2', 'swapon', 'bpf', 'ptrace', 'keyctl', 'unshare', 'setns', 'io_uring_setup', 'open_by_handle_at']) {
      assert.ok(denied.includes(s), `${s} is denied`);
    }
    for (const s of ['read', 'clone', 'execve', 'sethostname', 'chmod']) assert.ok(!denied.includes(s), `${s} is allowed`);
    const clone = p.syscalls!.filter((r) => r.names.includes('clone'));
    assert.ok(clone.length >= 7 && clone.every((r) => r.args?.[0]?.op === 'SCMP_CMP_MASKED_EQ' && r.args[0].value === r.args[0].valueTwo));
    assert.ok(clone.some((r) => r.args![0]!.value === 0x10000000), 'CLONE_NEWUSER is refused');
    assert.deepEqual(p.syscalls!.find((r) => r.names.includes('clone3')), { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 });
  });

  test('a capability lifts the group it makes legitimate, and only that group', () => {
    const admin = defaultSeccompProfile([...DEFAULT_CAPABILITIES, 'CAP_SYS_ADMIN'], 'x64');
    const denied = deniedNames(admin);
    for (const s of ['mount', 'unshare', 'setns', 'bpf']) assert.ok(!denied.includes(s), `${s} is allowed with CAP_SYS_ADMIN`);
    for (const s of ['kexec_load', 'init_module', 'ptrace', 'keyctl']) assert.ok(denied.includes(s), `${s} stays denied`);
    assert.ok(!admin.syscalls!.some((r) => r.names.includes('clone') || r.names.includes('clone3')));
    assert.ok(!deniedNames(defaultSeccompProfile([...DEFAULT_CAPABILITIES, 'CAP_SYS_PTRACE'], 'x64')).includes('ptrace'));
    assert.ok(!deniedNames(defaultSeccompProfile(['CAP_BPF'], 'x64')).includes('bpf'));
  });

  test('architectures cover every ABI of the host', () => {
    assert.deepEqual(seccompArchitectures('arm64'), ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
    assert.equal(defaultSeccompProfile([], 'riscv64').architectures, undefined);
  });
});

describe('seccomp and AppArmor in the OCI spec', () => {
  const input = (config = containerConfig(), seccomp?: Parameters<typeof ociSeccomp>[0]) => ({
    containerId: 'c'.repeat(64), config, sandbox: sandboxConfig(), image: { Cmd: ['sh'] },
    user: { uid: 0, gid: 0, additionalGids: [] }, rootfsPath: '/r', sandboxFiles: {}, cgroupsPath: '/podvisor/c', seccomp,
  });

  test('no choice or unconfined leaves linux.seccomp out; the default follows the container\'s capabilities', () => {
    assert.equal('seccomp' in buildOciSpec(input()).linux, false);
    assert.equal('seccomp' in buildOciSpec(input(containerConfig(), { kind: 'unconfined' })).linux, false);
    const adminConfig = withSecurity({ addCapabilities: ['SYS_ADMIN'] });
    const spec = buildOciSpec(input(adminConfig, { kind: 'runtime-default' }));
    assert.deepEqual(spec.linux.seccomp, defaultSeccompProfile(spec.process.capabilities.effective));
    assert.ok(!deniedNames(spec.linux.seccomp!).includes('mount'));
    const profile: OciSeccomp = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['sethostname'], action: 'SCMP_ACT_ERRNO' }] };
    assert.deepEqual(buildOciSpec(input(containerConfig(), { kind: 'profile', file: '/p.json', profile })).linux.seccomp, profile);
  });

  test('AppArmor: RuntimeDefault and Unconfined pass, Localhost is UNIMPLEMENTED naming the profile', () => {
    validateContainerConfig(withSecurity({ apparmor: { type: 'RuntimeDefault', localhostRef: '' } }));
    validateContainerConfig(withSecurity({ apparmor: { type: 'Unconfined', localhostRef: '' } }));
    assert.throws(() => validateContainerConfig(withSecurity({ apparmor: { type: 'Localhost', localhostRef: 'k8s-deny-write' } })),
      (e) => isPodvisorError(e, 'UNIMPLEMENTED') && /AppArmor profile "k8s-deny-write"/.test(e.message));
    assert.deepEqual(appArmorProfileFromName('runtime/default'), { type: 'RuntimeDefault', localhostRef: '' });
    assert.equal(appArmorProfileFromName(''), undefined);
    assert.throws(() => appArmorProfileFromName('docker-default'), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
  });
});
