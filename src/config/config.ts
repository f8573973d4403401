import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';
import { invalidArgument, isPodvisorError, messageOf } from '../errors.js';
import { validateRegistryConfig, type RegistryConfig } from '../image/registry-config.js';
import { DEFAULT_MAX_UNPACKED_BYTES } from '../image/unpack.js';
import { TableReader, isTable } from './table-reader.js';
import { defaultAdminSocket, listenAddressProblem } from './listen-address.js';
import type { VmBackendName } from '../vm/pod-vm.js';
import { SHARE_MODES, type ShareMode } from '../volume/share-mode.js';

/** A VM shape that a runtime handler maps to. */
export interface RuntimeProfileConfig {
  machine: 'microvm' | 'q35';
  accel: 'auto' | 'kvm' | 'tcg';
  vcpus: number;
  memoryMiB: number;
  maxVcpus: number;
  maxMemoryMiB: number;
  /** Added to the sum of container memory limits: guest kernel, agent, page cache. */
  overheadMemoryMiB: number;
  kernel: string;
  initrd: string;
  systemDisk: string;
  kernelArgs: string[];
  /** Which VM backend starts this handler's pods (src/vm/pod-vm.ts); "qemu" when unset. */
  backend?: VmBackendName;
  /** Start this handler's sandboxes as clones of a saved VM template (src/pod/vm-templates.ts). */
  template: boolean;
  /** TCG translation cache, MiB (0: QEMU's default); see VmProfile.tcgTbSizeMiB. */
  tcgTbSizeMiB: number;
  /** Free-page reporting through a virtio-balloon device; see VmProfile.freePageReporting. */
  freePageReporting: boolean;
  /** TCG translation cache of this handler's template clones, MiB (0: tcgTbSizeMiB's); see README "Start-up, memory and density". */
  cloneTcgTbSizeMiB: number;
  /** The guest agent's V8 flag set in this handler's VM template, so in its clones (images/guest/agent-v8-variants). */
  templateAgentV8: TemplateAgentV8;
}

/** The agent V8 flag sets the guest image builds (images/guest/agent-v8-variants); a template boots with one. */
export const AGENT_V8_FLAG_SETS = ['default', 'semi1', 'lite', 'jitless'] as const;
export type TemplateAgentV8 = (typeof AGENT_V8_FLAG_SETS)[number];

export interface PodvisorConfig {
  /** The file it came from, or undefined for built-in defaults. */
  file?: string;
  listen: string;
  /** The operator CLI's socket (0600, root): debug and inspection calls that are not CRI. */
  adminListen: string;
  root: string;
  state: string;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  guestDir: string;
  /** How long a sandbox VM may take from QEMU start to agent ready. */
  bootTimeoutSeconds: number;
  runtimes: Record<string, RuntimeProfileConfig>;
  registry: RegistryConfig;
  images: { maxUnpackedBytes: number };
  cni: { confDir: string; binDirs: string[] };
  streaming: StreamingConfig;
  debug: {
    enabled: boolean;
    authorizedKeysFile: string;
    /** "ADDR:PORT" of the SSH debug gateway; '' = no gateway (the CLI console still works when enabled). */
    sshListen: string;
    /** The gateway's host key, generated on first start and kept. */
    hostKeyFile: string;
  };
  /** "ADDR:PORT" for Prometheus /metrics; '' = off. */
  metrics: { listen: string };
  vm: VmHostConfig;
  /** The libvirt VM backend's connection (handlers with backend = "libvirt"). */
  libvirt: { uri: string };
  passthrough: PassthroughConfig;
  /** `[volumes]`: how CRI mounts reach the guest (src/volume/sandbox-share.ts). */
  volumes: { shareMode: ShareMode };
}

/**
 * `[passthrough]`: pods a VM cannot serve (host namespaces) or that the operator trusts (named
 * handlers) go to a co-installed CRI runtime such as containerd (src/cri/passthrough/). Off
 * unless `endpoint` is set.
 */
export interface PassthroughConfig {
  /** `unix:///run/containerd/containerd.sock`; '' = off. */
  endpoint: string;
  /** Pods asking for the host's network, PID or IPC namespace go there. */
  hostNamespaces: boolean;
  /** Runtime handlers (RuntimeClass handler names) whose pods go there by name. */
  handlers: string[];
}

/** `[vm]`: how QEMU runs on this host (issue 9: accelerator probe, confinement, console cap). */
export interface VmHostConfig {
  /** The device the KVM probe opens before it boots its test guest; tests point it at a fake. */
  kvmDevice: string;
  kvmProbeTimeoutMs: number;
  /** Start VMs without QEMU's seccomp filter when this QEMU has no `-sandbox` (fail closed otherwise). */
  allowNoSeccomp: boolean;
  /** The user that owns the per-VM uid range in /etc/subuid (hack/install-deps creates it). */
  qemuUser: string;
  /** Per-VM cgroups go under this path in each hierarchy; "" places no limits. */
  cgroupParent: string;
  /** QEMU's own memory above guest RAM (memory.max = guest RAM + this). */
  qemuOverheadMiB: number;
  qemuPidsMax: number;
  /** What is kept of each VM's serial console on the host. */
  consoleMaxBytes: number;
  /** Sandbox VMs booting at once; further RunPodSandbox calls wait (issue 16). Default: the host's cores. */
  maxParallelLaunches: number;
}

/** `[streaming]`: the exec/attach/port-forward server (src/streaming/). */
export interface StreamingConfig {
  /** A specific IP address: it goes into the URLs kubelet is handed. */
  address: string;
  /** 0: a free port chosen at start. */
  port: number;
  /** Both or neither: HTTPS with this certificate and key. */
  tls?: { certFile: string; keyFile: string };
  idleTimeoutSeconds: number;
}

/** Command-line flags win over the file. */
export interface ConfigOverrides {
  listen?: string;
  root?: string;
  state?: string;
  logLevel?: string;
}

/** Defaults of the pod VM's memory knobs, chosen by bench/ measurements (README). */
const DEFAULT_TCG_TB_SIZE_MIB = 32;
const DEFAULT_FREE_PAGE_REPORTING = false;
/** Template clones (bench/clone-memory.ts): 16 MiB and a jitless agent cost no more CPU at start than 32 MiB with V8's JIT. */
const DEFAULT_CLONE_TCG_TB_SIZE_MIB = 16;
const DEFAULT_TEMPLATE_AGENT_V8: TemplateAgentV8 = 'jitless';

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

/** The repo's own build output, so a checkout runs without a config file. */
export const DEFAULT_GUEST_DIR =
  process.env.PODVISOR_GUEST_DIR ?? resolve(dirname(fileURLToPath(import.meta.url)), '../../out/guest');

export function loadConfig(file: string | undefined, overrides: ConfigOverrides = {}): PodvisorConfig {
  let data: Record<string, unknown> = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw invalidArgument(`config ${file}: cannot read it: ${messageOf(e)}`);
    }
    try {
      const parsed = parseToml(text);
      if (!isTable(parsed)) throw new Error('not a table');
      data = parsed;
    } catch (e) {
      throw invalidArgument(`config ${file}: not valid TOML: ${messageOf(e)}`);
    }
  }
  return readConfig(new TableReader(file ?? '(defaults)', '', data), file, overrides);
}

function readConfig(top: TableReader, file: string | undefined, overrides: ConfigOverrides): PodvisorConfig {
  const daemon = top.table('daemon');
  // The file is read (and checked) even where a flag wins, so its typos still surface.
  const listen = pick(overrides.listen, daemon.string('listen', '/run/podvisor/podvisor.sock', absolutePath));
  const root = pick(overrides.root, daemon.string('root', '/var/lib/podvisor', absolutePath));
  const state = pick(overrides.state, daemon.string('state', '/run/podvisor', absolutePath));
  const logLevelRaw = pick(overrides.logLevel, daemon.oneOf('log_level', 'info', LOG_LEVELS));
  if (!(LOG_LEVELS as readonly string[]).includes(logLevelRaw)) {
    throw invalidArgument(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${logLevelRaw}"`);
  }
  const guestDir = daemon.string('guest_dir', DEFAULT_GUEST_DIR, absolutePath);
  const bootTimeoutSeconds = daemon.int('boot_timeout_seconds', 120, { min: 5, max: 3600 });
  const adminListen = daemon.string('admin_listen', defaultAdminSocket(listen), absolutePath);
  daemon.finish();

  const runtimes: Record<string, RuntimeProfileConfig> = {};
  for (const [handler, table] of top.namedTables('runtimes')) runtimes[handler] = readProfile(table, guestDir);
  // kubelet sends "" when a pod names no RuntimeClass; `kata` is the handler
  // operators already use for VM-isolated pods. Both exist unless configured.
  for (const handler of ['', 'kata']) {
    runtimes[handler] ??= readProfile(new TableReader('(defaults)', `runtimes.${handler}`, {}), guestDir);
  }

  const registry = readRegistry(top, file ?? '(defaults)');

  const images = top.table('images');
  const maxUnpackedBytes = images.int('max_unpacked_bytes', DEFAULT_MAX_UNPACKED_BYTES, { min: 1024 * 1024 });
  images.finish();

  const cniTable = top.table('cni');
  const cni = {
    confDir: cniTable.string('conf_dir', '/etc/cni/net.d', absolutePath),
    binDirs: cniTable.strings('bin_dirs', ['/usr/lib/cni', '/opt/cni/bin']),
  };
  cniTable.finish();

  const streamingTable = top.table('streaming');
  const streaming: StreamingConfig = {
    address: streamingTable.string('address', '127.0.0.1', (v) =>
      isIP(v) === 0 ? `must be an IP address, got "${v}"` : v === '0.0.0.0' || v === '::' ? 'must be a specific address, not a wildcard: it is put into the URLs kubelet connects to' : undefined),
    port: streamingTable.int('port', 0, { min: 0, max: 65535 }),
    // kubelet's streamingConnectionIdleTimeout default
    idleTimeoutSeconds: streamingTable.int('idle_timeout_seconds', 4 * 3600, { min: 1, max: 7 * 24 * 3600 }),
  };
  const certFile = streamingTable.string('tls_cert_file', '', (v) => (v === '' || isAbsolute(v) ? undefined : 'must be an absolute path'));
  const keyFile = streamingTable.string('tls_key_file', '', (v) => (v === '' || isAbsolute(v) ? undefined : 'must be an absolute path'));
  if ((certFile === '') !== (keyFile === '')) streamingTable.fail(certFile ? 'tls_key_file' : 'tls_cert_file', 'tls_cert_file and tls_key_file go together: set both or neither');
  if (certFile) streaming.tls = { certFile, keyFile };
  streamingTable.finish();

  const debugTable = top.table('debug');
  const debug = {
    enabled: debugTable.bool('enabled', false),
    authorizedKeysFile: debugTable.string('authorized_keys_file', '', (v) => (v === '' || isAbsolute(v) ? undefined : 'must be an absolute path')),
    sshListen: debugTable.string('ssh_listen', '', listenAddressProblem),
    hostKeyFile: debugTable.string('host_key_file', join(root, 'debug', 'ssh_host_ed25519_key'), absolutePath),
  };
  if (debug.enabled && debug.authorizedKeysFile === '') {
    debugTable.fail('authorized_keys_file', 'must be set when debug.enabled = true: debug access needs a key');
  }
  if (debug.sshListen !== '' && !debug.enabled) {
    debugTable.fail('ssh_listen', 'is set but debug.enabled is false: set enabled = true to open the SSH debug gateway, or remove ssh_listen');
  }
  debugTable.finish();

  const metricsTable = top.table('metrics');
  const metrics = { listen: metricsTable.string('listen', '', listenAddressProblem) };
  metricsTable.finish();
  const vm = readVmHost(top.table('vm'));
  const passthrough = readPassthrough(top.table('passthrough'), runtimes);
  // `[libvirt]`: where the libvirt VM backend connects (issue 19); used only by handlers with backend = "libvirt".
  const libvirtTable = top.table('libvirt');
  const libvirt = { uri: libvirtTable.string('uri', 'qemu:///system', (v) => (/^[a-z][a-z0-9+]*:\/\//.test(v) ? undefined : 'must be a libvirt URI such as "qemu:///system"')) };
  libvirtTable.finish();
  const volumesTable = top.table('volumes');
  // "copy" forces the template-clone mode on every sandbox (tests it on cold VMs); clones use it whatever this says.
  const volumes = { shareMode: volumesTable.oneOf('share_mode', 'virtiofs', SHARE_MODES) };
  volumesTable.finish();
  top.finish();

  return {
    file,
    listen,
    adminListen,
    root,
    state,
    logLevel: logLevelRaw as PodvisorConfig['logLevel'],
    guestDir,
    bootTimeoutSeconds,
    runtimes,
    registry,
    images: { maxUnpackedBytes },
    cni,
    streaming,
    debug,
    vm,
    metrics,
    passthrough,
    libvirt,
    volumes,
  };
}

function readPassthrough(t: TableReader, runtimes: Record<string, RuntimeProfileConfig>): PassthroughConfig {
  const endpoint = t.string('endpoint', '', (v) =>
    v === '' || /^unix:\/\/\/./.test(v) ? undefined : `must be a unix socket URL such as "unix:///run/containerd/containerd.sock", got "${v}"`);
  const hostNamespaces = t.bool('host_namespaces', false);
  const handlers = t.strings('handlers', []);
  for (const h of handlers) {
    // "" and "kata" are VM handlers by default; naming one here is the operator's explicit choice to send
    // its pods to the other runtime. A handler with its own [runtimes] table in the file is ambiguous.
    if (h !== '' && h !== 'kata' && Object.hasOwn(runtimes, h)) t.fail('handlers', `names "${h}", which also has a [runtimes."${h}"] VM table: a handler runs either in a VM or in the pass-through runtime`);
  }
  if (endpoint === '' && (hostNamespaces || handlers.length > 0)) {
    t.fail(hostNamespaces ? 'host_namespaces' : 'handlers', 'routes pods to the pass-through runtime, but passthrough.endpoint is not set');
  }
  t.finish();
  return { endpoint, hostNamespaces, handlers };
}

function readVmHost(t: TableReader): VmHostConfig {
  const vm: VmHostConfig = {
    kvmDevice: t.string('kvm_device', '/dev/kvm', absolutePath),
    kvmProbeTimeoutMs: t.int('kvm_probe_timeout_ms', 5000, { min: 100, max: 120_000 }),
    allowNoSeccomp: t.bool('allow_no_seccomp', false),
    qemuUser: t.string('qemu_user', 'podvisor-qemu', (v) => (/^[a-z_][a-z0-9_-]{0,31}$/.test(v) && v !== 'root' ? undefined : 'must be a non-root user name')),
    cgroupParent: t.string('cgroup_parent', 'podvisor', (v) => (v === '' || /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/.test(v) ? undefined : 'must be a relative cgroup path such as "podvisor"')),
    qemuOverheadMiB: t.int('qemu_overhead_mib', 256, { min: 32 }),
    qemuPidsMax: t.int('qemu_pids_max', 256, { min: 16 }),
    consoleMaxBytes: t.int('console_max_bytes', 2 * 1024 * 1024, { min: 64 * 1024, max: 64 * 1024 * 1024 }),
    // One boot per core measured best on this 2-core host under TCG (README, "Start-up and density").
    maxParallelLaunches: t.int('max_parallel_launches', availableParallelism(), { min: 1, max: 1024 }),
  };
  t.finish();
  return vm;
}

function readProfile(t: TableReader, guestDir: string): RuntimeProfileConfig {
  const vcpus = t.int('vcpus', 1, { min: 1, max: 64 });
  const memoryMiB = t.int('memory_mib', 512, { min: 128, max: 1024 * 1024 });
  const profile: RuntimeProfileConfig = {
    machine: t.oneOf('machine', 'microvm', ['microvm', 'q35'] as const),
    accel: t.oneOf('accel', 'auto', ['auto', 'kvm', 'tcg'] as const),
    vcpus,
    memoryMiB,
    maxVcpus: t.int('max_vcpus', Math.max(vcpus, 4), { min: vcpus, max: 256 }),
    maxMemoryMiB: t.int('max_memory_mib', Math.max(memoryMiB, 8192), { min: memoryMiB }),
    overheadMemoryMiB: t.int('overhead_memory_mib', 256, { min: 0 }),
    kernel: t.string('kernel', join(guestDir, 'vmlinux'), absolutePath),
    initrd: t.string('initrd', join(guestDir, 'initrd.img'), absolutePath),
    systemDisk: t.string('system_disk', join(guestDir, 'system.erofs'), absolutePath),
    kernelArgs: t.strings('kernel_args', []),
    // Off by default: a clone's volumes use share mode copy, whose semantics differ from virtio-fs (docs/templates.md).
    template: t.bool('template', false),
    backend: t.oneOf('backend', 'qemu', ['qemu', 'libvirt'] as const),
    // Both chosen by measurement (README, "Memory per idle sandbox").
    tcgTbSizeMiB: t.int('tcg_tb_size_mib', DEFAULT_TCG_TB_SIZE_MIB, { min: 0, max: 4096 }),
    freePageReporting: t.bool('free_page_reporting', DEFAULT_FREE_PAGE_REPORTING),
    cloneTcgTbSizeMiB: t.int('clone_tcg_tb_size_mib', DEFAULT_CLONE_TCG_TB_SIZE_MIB, { min: 0, max: 4096 }),
    templateAgentV8: t.oneOf('template_agent_v8', DEFAULT_TEMPLATE_AGENT_V8, AGENT_V8_FLAG_SETS),
  };
  for (const key of ['clone_tcg_tb_size_mib', 'template_agent_v8']) {
    if (!profile.template && t.has(key)) t.fail(key, 'applies to VM template clones only; set template = true or remove it');
  }
  if (profile.template && profile.backend === 'libvirt') {
    t.fail('template', 'is the qemu backend\'s: the libvirt backend cannot restore a VM template (no incoming migration into a libvirt domain); remove template or use backend = "qemu"');
  }
  t.finish();
  return profile;
}

/** The image service owns the meaning of `[registry]`; errors gain the file name here. */
function readRegistry(top: TableReader, file: string): RegistryConfig {
  try {
    return validateRegistryConfig(top.raw('registry'));
  } catch (e) {
    if (isPodvisorError(e)) throw invalidArgument(`config ${file}: ${e.message}`);
    throw e;
  }
}

function pick(flag: string | undefined, fromFile: string): string {
  return flag ?? fromFile;
}

function absolutePath(v: string): string | undefined {
  return isAbsolute(v) ? undefined : `must be an absolute path, got "${v}"`;
}
