import type { OciSeccomp, OciSeccompRule } from './oci-seccomp.js';

/**
 * podvisor's RuntimeDefault seccomp profile.
 *
 * Why a deny-list (default SCMP_ACT_ALLOW) and not an allow-list: the pod VM
 * is the isolation boundary, so this filter is defence in depth for the pod's
 * own guest kernel (it keeps a container away from the agent, the other
 * containers and kernel interfaces nobody in a pod needs). An allow-list has to
 * track every syscall ordinary software uses, on every architecture, and each
 * gap breaks real workloads with EPERM in ways that are hard to diagnose; a
 * deny-list only has to name the interfaces that are dangerous or
 * host-administrative. The price is that a brand-new syscall is allowed until
 * it is listed here, which the VM boundary makes acceptable.
 *
 * Some groups are lifted when the container holds the capability that makes
 * the operation legitimate (mount with CAP_SYS_ADMIN, module loading with
 * CAP_SYS_MODULE…): a container granted a capability should be able to use it,
 * and without the capability the kernel would refuse anyway, so the filter
 * only removes attack surface in the common, unprivileged case.
 */

const EPERM = 1;
const ENOSYS = 38;

interface DenyGroup {
  /** Why these are refused; kept next to the list so the profile explains itself. */
  reason: string;
  syscalls: string[];
  /** The group is not applied when the container holds any of these capabilities. */
  unlessCapability?: string[];
}

const DENY_GROUPS: DenyGroup[] = [
  {
    reason: 'replacing the guest kernel is never a container\'s business',
    syscalls: ['kexec_load', 'kexec_file_load'],
  },
  {
    reason: 'kernel modules change the kernel every container in the pod shares',
    syscalls: ['init_module', 'finit_module', 'delete_module', 'create_module', 'query_module', 'get_kernel_syms'],
    unlessCapability: ['CAP_SYS_MODULE'],
  },
  {
    reason: 'reboot in a PID namespace only kills its init; without the capability it is noise',
    syscalls: ['reboot'],
    unlessCapability: ['CAP_SYS_BOOT'],
  },
  {
    reason: 'swap is a decision for the VM, not for one container',
    syscalls: ['swapon', 'swapoff'],
  },
  {
    reason: 'mounting (old and new mount APIs) is administration of the container\'s filesystem tree',
    syscalls: [
      'mount', 'umount', 'umount2', 'pivot_root', 'fsopen', 'fsconfig', 'fsmount', 'fspick', 'move_mount', 'open_tree',
      'mount_setattr',
    ],
    unlessCapability: ['CAP_SYS_ADMIN'],
  },
  {
    reason: 'new or joined namespaces (user namespaces above all) open large kernel surfaces to unprivileged code',
    syscalls: ['unshare', 'setns'],
    unlessCapability: ['CAP_SYS_ADMIN'],
  },
  {
    reason: 'the kernel keyring is not isolated per container',
    syscalls: ['keyctl', 'add_key', 'request_key'],
  },
  {
    reason: 'eBPF programs run inside the kernel',
    syscalls: ['bpf'],
    unlessCapability: ['CAP_SYS_ADMIN', 'CAP_BPF'],
  },
  {
    reason: 'performance events expose kernel and other processes\' activity',
    syscalls: ['perf_event_open'],
    unlessCapability: ['CAP_SYS_ADMIN', 'CAP_PERFMON'],
  },
  {
    reason: 'reading or steering other processes is reserved for containers granted CAP_SYS_PTRACE',
    syscalls: ['ptrace', 'process_vm_readv', 'process_vm_writev', 'userfaultfd'],
    unlessCapability: ['CAP_SYS_PTRACE'],
  },
  {
    reason: 'setting the clock changes it for the whole pod',
    syscalls: ['settimeofday', 'stime', 'clock_settime', 'clock_adjtime'],
    unlessCapability: ['CAP_SYS_TIME'],
  },
  {
    reason: 'raw port I/O',
    syscalls: ['iopl', 'ioperm'],
    unlessCapability: ['CAP_SYS_RAWIO'],
  },
  { reason: 'process accounting', syscalls: ['acct'], unlessCapability: ['CAP_SYS_PACCT'] },
  { reason: 'disk quotas', syscalls: ['quotactl'], unlessCapability: ['CAP_SYS_ADMIN'] },
  { reason: 'the kernel log', syscalls: ['syslog'], unlessCapability: ['CAP_SYSLOG'] },
  { reason: 'tty hangup', syscalls: ['vhangup'], unlessCapability: ['CAP_SYS_TTY_CONFIG'] },
  { reason: 'filesystem-wide event monitoring', syscalls: ['fanotify_init'], unlessCapability: ['CAP_SYS_ADMIN'] },
  {
    reason: 'opening files by handle bypasses the mount namespace\'s view of the filesystem',
    syscalls: ['open_by_handle_at'],
    unlessCapability: ['CAP_DAC_READ_SEARCH'],
  },
  {
    reason: 'obsolete interfaces that ordinary software no longer uses',
    syscalls: ['uselib', 'ustat', 'sysfs', '_sysctl', 'lookup_dcookie', 'nfsservctl'],
  },
  {
    reason: 'io_uring is a large, frequently vulnerable kernel surface; software falls back to ordinary I/O',
    syscalls: ['io_uring_setup', 'io_uring_enter', 'io_uring_register'],
  },
];

/** clone(2) flags that create namespaces (CLONE_NEWTIME exists only for clone3 and unshare). */
const CLONE_NAMESPACE_FLAGS = {
  CLONE_NEWNS: 0x00020000,
  CLONE_NEWCGROUP: 0x02000000,
  CLONE_NEWUTS: 0x04000000,
  CLONE_NEWIPC: 0x08000000,
  CLONE_NEWUSER: 0x10000000,
  CLONE_NEWPID: 0x20000000,
  CLONE_NEWNET: 0x40000000,
};

/**
 * The namespace part of clone: without CAP_SYS_ADMIN, clone with any namespace
 * flag is refused (one rule per flag: libseccomp has no "masked not equal", and
 * rules for one syscall are alternatives). clone3 passes its flags in memory a
 * filter cannot read, so it answers ENOSYS, which makes libc fall back to clone.
 */
function namespaceCloneRules(): OciSeccompRule[] {
  // clone's flags are its first argument on x86 and arm; s390 swaps the first two, which podvisor does not run on.
  const perFlag: OciSeccompRule[] = Object.values(CLONE_NAMESPACE_FLAGS).map((flag) => ({
    names: ['clone'],
    action: 'SCMP_ACT_ERRNO',
    errnoRet: EPERM,
    args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
  }));
  return [...perFlag, { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS }];
}

/** The ABIs a process on this architecture can call the kernel with; each must be filtered, or its calls bypass the list. */
export function seccompArchitectures(arch: string = process.arch): string[] {
  switch (arch) {
    case 'x64': return ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'];
    case 'arm64': return ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'];
    default: return [];
  }
}

/** The RuntimeDefault profile for a container holding `capabilities` (CAP_* names). */
export function defaultSeccompProfile(capabilities: readonly string[], arch: string = process.arch): OciSeccomp {
  const holds = (caps: string[] | undefined) => caps !== undefined && caps.some((c) => capabilities.includes(c));
  const denied = DENY_GROUPS.filter((g) => !holds(g.unlessCapability)).flatMap((g) => g.syscalls);
  const syscalls: OciSeccompRule[] = [{ names: denied, action: 'SCMP_ACT_ERRNO', errnoRet: EPERM }];
  if (!capabilities.includes('CAP_SYS_ADMIN')) syscalls.push(...namespaceCloneRules());
  const architectures = seccompArchitectures(arch);
  return { defaultAction: 'SCMP_ACT_ALLOW', ...(architectures.length > 0 ? { architectures } : {}), syscalls };
}
