import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statfsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { failedPrecondition, messageOf } from '../errors.js';
import { logger } from '../log.js';
import { readJsonFile, writeJsonAtomicSync } from '../util/atomic-file.js';
import { hostTscKhz, resolveAccel } from '../vm/host.js';
import { DEFAULT_QEMU_BINARY, type VmProfile } from '../vm/profile.js';
import { consoleTail } from '../vm/run-dir.js';
import { Vm, type VmLaunchOptions } from '../vm/vm.js';

/**
 * VM templates: one booted, agent-ready VM per (runtime handler, VM profile, guest image,
 * QEMU build, NIC or not), saved once so that sandboxes start as clones of it instead of
 * booting (docs/templates.md).
 *
 * A template is a directory `<root>/<key>/`: `ram` (guest RAM; the template VM mapped it
 * shared, so it holds the whole booted guest), `state` (QEMU's device state, tens of KiB,
 * saved with x-ignore-shared) and `template.json` (the inputs, written last: a directory
 * without it is a build that did not finish). The key is a hash of the inputs, so any
 * changed input (a rebuilt guest image, another QEMU, another VM size) names a different
 * template and the old one is removed when the new one is built. Clones map `ram` with
 * share=off: a private copy-on-write mapping, so no clone ever writes the file.
 *
 * Builds are serialised per key (concurrent first users wait for the one build); clones
 * themselves take no lock. A template that cannot be built or restored is logged and the
 * sandbox boots cold; a failed build is not retried for RETRY_AFTER_MS.
 */

const log = logger('vm-templates');

/** Bump when the layout or what a template VM does before its save changes. */
const TEMPLATE_FORMAT = 1;
/** Templates kept at once (each holds a booted guest's RAM on a tmpfs); the least recently used goes. */
const MAX_TEMPLATES = 4;
const RETRY_AFTER_MS = 5 * 60_000;
/** How long the template's agent may take to see the host leave before the save. */
const AGENT_IDLE_WAIT_MS = 30_000;
const TMPFS_MAGIC = 0x01021994;

export interface TemplateRequest {
  handler: string;
  /** The sandbox's VM profile (anonymous memory; the template decides where RAM lives). */
  profile: VmProfile;
  /** Whether the sandbox has a NIC (pod network): the device set must match. */
  nic: boolean;
  /** How the template and its clones differ from a cold VM of the same profile. */
  tuning?: TemplateTuning;
}

/**
 * What a template and its clones run with instead of the sandbox profile's (README "Start-up,
 * memory and density"). A clone re-translates the running guest's code into an empty TCG cache
 * and an idle one keeps the whole cache: a smaller one than a cold boot needs is most of the
 * per-clone memory saved, and a jitless agent (no V8 machine code for TCG to translate again
 * each time V8 rewrites it) keeps the CPU of a start with that cache where 32 MiB was.
 */
export interface TemplateTuning {
  /** The clones' TCG translation cache, MiB; unset or 0: the profile's. Not part of the saved state. */
  cloneTcgTbSizeMiB?: number;
  /** The agent's V8 flag set (kernel argument podvisor.agent_v8), unless the profile's kernel arguments name one. */
  agentV8?: string;
}

const AGENT_V8_ARG = 'podvisor.agent_v8=';

/** A usable template: what a clone launch needs. */
export interface VmTemplate {
  key: string;
  /** When this build of it was made: a clone of an earlier build that fails does not remove a later one. */
  createdAt: string;
  stateFile: string;
  /** The sandbox profile with RAM mapped privately from the template's RAM file. */
  cloneProfile: VmProfile;
}

interface TemplateInputs {
  format: number;
  handler: string;
  machine: string;
  vcpus: number;
  memoryMiB: number;
  kernelArgs: string[];
  accel: 'kvm' | 'tcg';
  tscKhz: number;
  nic: boolean;
  /** The balloon device is part of the device set, so it must match; the TCG cache size is kept with it. */
  freePageReporting: boolean;
  tcgTbSizeMiB: number;
  /** size:mtime:inode of kernel, initrd and system disk, and the guest image manifest's hash. */
  guest: string[];
  qemu: string;
}

interface TemplateRecord {
  key: string;
  inputs: TemplateInputs;
  createdAt: string;
  buildMs: number;
  stateBytes: number;
}

export interface VmTemplatesOptions {
  root: string;
  /** The daemon's agent connector (pod-context's AgentConnector): readiness is the agent answering. */
  connectAgent: (socketPath: string, deadline: number) => Promise<{ close(): void }>;
  bootTimeoutMs: number;
  /** Seccomp and console settings of every VM; a template VM runs unconfined (see build). */
  launch?: Pick<VmLaunchOptions, 'allowNoSeccomp' | 'consoleMaxBytes'>;
}

export class VmTemplates {
  private readonly building = new Map<string, Promise<VmTemplate>>();
  private readonly failedAt = new Map<string, number>();
  private readonly lastUsed = new Map<string, number>();
  private readonly inFlight = new Set<Vm>();
  private checkedRoot = false;

  constructor(private readonly opts: VmTemplatesOptions) {}

  /**
   * The template for this request, built now if there is none (waiting for a build that is
   * under way); undefined when no template can be had, after saying why in the log.
   */
  async forSandbox(req: TemplateRequest): Promise<VmTemplate | undefined> {
    let key = '';
    try {
      const profile = templateProfile(req);
      const inputs = await templateInputs(req, profile);
      key = templateKey(inputs);
      const failed = this.failedAt.get(key);
      if (failed !== undefined && Date.now() - failed < RETRY_AFTER_MS) return undefined;
      this.lastUsed.set(key, Date.now());
      const ready = this.load(key, profile, req.tuning);
      if (ready) return ready;
      let build = this.building.get(key);
      if (!build) {
        build = this.build(key, inputs, req, profile).finally(() => this.building.delete(key));
        this.building.set(key, build);
      }
      return await build;
    } catch (e) {
      if (key) this.failedAt.set(key, Date.now());
      log.warn({ handler: req.handler, key: key || undefined, err: messageOf(e) }, 'VM template unusable; this sandbox boots cold');
      return undefined;
    }
  }

  /** A clone of this template failed to start: the template is removed (rebuilt on next use) and the caller boots cold. */
  discard(template: VmTemplate, why: string): void {
    // Another clone of it failed first and a fresh build of the same key is under way: keep that.
    if (this.building.has(template.key)) return;
    const current = readJsonFile<TemplateRecord>(join(this.dir(template.key), 'template.json'));
    if (current && current.createdAt !== template.createdAt) return;
    log.warn({ key: template.key, err: why }, 'VM template unusable (a clone of it failed to start); removed, this sandbox boots cold');
    rmSync(this.dir(template.key), { recursive: true, force: true });
  }

  /**
   * Removes what an earlier podvisord left half-done: template builds without
   * `template.json` (their QEMU killed if it still runs). Finished templates are kept.
   */
  async removeLeftovers(): Promise<void> {
    if (!existsSync(this.opts.root)) return;
    for (const key of readdirSync(this.opts.root)) {
      const dir = this.dir(key);
      if (existsSync(join(dir, 'template.json'))) {
        if (existsSync(join(dir, 'run'))) await Vm.killLeftover(join(dir, 'run')).catch(() => false);
        continue;
      }
      if (await Vm.killLeftover(join(dir, 'run')).catch(() => false)) log.warn({ key }, 'killed a template VM an earlier podvisord left mid-build');
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /** Stops template VMs still booting (daemon shutdown): a template build never outlives its daemon. */
  async close(): Promise<void> {
    await Promise.all([...this.inFlight].map((vm) => vm.destroy({ timeoutMs: 3000 }).catch(() => undefined)));
  }

  private dir(key: string): string {
    return join(this.opts.root, key);
  }

  /** `profile`: the template VM's (templateProfile). */
  private load(key: string, profile: VmProfile, tuning: TemplateTuning | undefined): VmTemplate | undefined {
    const dir = this.dir(key);
    const record = readJsonFile<TemplateRecord>(join(dir, 'template.json'));
    if (!record) return undefined;
    const stateFile = join(dir, 'state');
    const ramFile = join(dir, 'ram');
    const problem = !existsSync(stateFile) ? 'its state file is missing'
      : statSync(stateFile).size !== record.stateBytes ? 'its state file changed size'
        : !existsSync(ramFile) ? 'its RAM file is missing'
          : statSync(ramFile).size !== profile.memoryMiB * 1024 * 1024 ? 'its RAM file has the wrong size'
            : undefined;
    if (problem) {
      log.warn({ key, problem }, 'VM template is damaged; rebuilding it');
      rmSync(dir, { recursive: true, force: true });
      return undefined;
    }
    const cloneProfile: VmProfile = { ...profile, memory: { kind: 'file', memPath: ramFile, share: false } };
    if (tuning?.cloneTcgTbSizeMiB) cloneProfile.tcgTbSizeMiB = tuning.cloneTcgTbSizeMiB;
    return { key, createdAt: record.createdAt, stateFile, cloneProfile };
  }

  private async build(key: string, inputs: TemplateInputs, req: TemplateRequest, profile: VmProfile): Promise<VmTemplate> {
    this.prepareRoot();
    this.makeRoom(key, inputs);
    const dir = this.dir(key);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const ramFile = join(dir, 'ram');
    const stateFile = join(dir, 'state');
    const t0 = performance.now();
    log.info({ key, handler: req.handler, vcpus: profile.vcpus, memoryMiB: profile.memoryMiB, nic: req.nic, kernelArgs: profile.kernelArgs }, 'building VM template');
    let vm: Vm | undefined;
    try {
      // Unconfined (root, still under seccomp): only a root QEMU can reach the socket its
      // state is saved through (src/vm/vm-state.ts). The template runs podvisor's own guest
      // image and no tenant input; it is stopped right after the save.
      vm = await Vm.launch({
        id: `template-${key.slice(0, 12)}`,
        profile: { ...profile, memory: { kind: 'file', memPath: ramFile, share: true } },
        runDir: join(dir, 'run'),
        placeholderNic: req.nic,
        ...this.opts.launch,
        readyTimeoutMs: this.opts.bootTimeoutMs,
        waitReady: async (v, deadline) => {
          this.inFlight.add(v);
          const agent = await this.opts.connectAgent(v.agentSocket, deadline);
          agent.close();
        },
      });
      this.inFlight.add(vm);
      // The save waits until the guest agent has seen this host leave, so every clone's agent
      // starts waiting for a new host rather than holding a session that no clone has.
      await waitForConsole(vm, /host disconnected; waiting for the next connection/, AGENT_IDLE_WAIT_MS);
      await vm.saveState(stateFile);
      await vm.destroy({ timeoutMs: 5000 });
      chmodSync(ramFile, 0o600);
      digZeroPages(key, ramFile);
      const record: TemplateRecord = { key, inputs, createdAt: new Date().toISOString(), buildMs: Math.round(performance.now() - t0), stateBytes: statSync(stateFile).size };
      writeJsonAtomicSync(join(dir, 'template.json'), record);
      log.info({ key, buildMs: record.buildMs, stateBytes: record.stateBytes }, 'VM template ready');
      const ready = this.load(key, profile, req.tuning);
      if (!ready) throw failedPrecondition(`VM template ${key} was built but cannot be loaded`);
      return ready;
    } catch (e) {
      await vm?.destroy({ timeoutMs: 3000 }).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
      throw e;
    } finally {
      if (vm) this.inFlight.delete(vm);
      for (const v of this.inFlight) if (v.state !== 'running') this.inFlight.delete(v);
    }
  }

  /** The root dir, 0700; RAM files belong on a tmpfs (a disk file works, but pages then go to disk). */
  private prepareRoot(): void {
    mkdirSync(this.opts.root, { recursive: true, mode: 0o700 });
    if (this.checkedRoot) return;
    this.checkedRoot = true;
    if (statfsSync(this.opts.root).type !== TMPFS_MAGIC) {
      log.warn({ root: this.opts.root }, 'the VM template directory is not on a tmpfs: template RAM files go to disk (put the state directory on a tmpfs, e.g. under /run)');
    }
  }

  /** Removes templates the new one supersedes (same handler, size and NIC) and, past the cap, the least recently used. */
  private makeRoom(key: string, inputs: TemplateInputs): void {
    const others = readdirSync(this.opts.root).filter((k) => k !== key && !this.building.has(k));
    for (const other of others) {
      const rec = readJsonFile<TemplateRecord>(join(this.dir(other), 'template.json'));
      const same = rec && rec.inputs.handler === inputs.handler && rec.inputs.nic === inputs.nic &&
        rec.inputs.vcpus === inputs.vcpus && rec.inputs.memoryMiB === inputs.memoryMiB;
      if (!rec || same) {
        log.info({ key: other, replacedBy: key }, 'removing a superseded VM template');
        rmSync(this.dir(other), { recursive: true, force: true });
      }
    }
    const left = readdirSync(this.opts.root).filter((k) => k !== key && !this.building.has(k));
    left.sort((a, b) => (this.lastUsed.get(a) ?? 0) - (this.lastUsed.get(b) ?? 0));
    while (left.length >= MAX_TEMPLATES) {
      const victim = left.shift()!;
      log.info({ key: victim }, `removing the least recently used VM template (at most ${MAX_TEMPLATES} are kept)`);
      rmSync(this.dir(victim), { recursive: true, force: true });
    }
  }
}

/** The template VM's profile: the sandbox's, with the tuning's agent V8 flag set on the kernel command line. */
function templateProfile(req: TemplateRequest): VmProfile {
  const v8 = req.tuning?.agentV8;
  if (!v8 || req.profile.kernelArgs.some((a) => a.startsWith(AGENT_V8_ARG))) return req.profile;
  return { ...req.profile, kernelArgs: [...req.profile.kernelArgs, `${AGENT_V8_ARG}${v8}`] };
}

/** What names a template: everything that decides the saved guest and the devices around it. */
async function templateInputs(req: TemplateRequest, p: VmProfile): Promise<TemplateInputs> {
  return {
    format: TEMPLATE_FORMAT,
    handler: req.handler,
    machine: p.machine,
    vcpus: p.vcpus,
    memoryMiB: p.memoryMiB,
    kernelArgs: p.kernelArgs,
    accel: await resolveAccel(p.accel),
    tscKhz: p.tscKhz ?? hostTscKhz(),
    nic: req.nic,
    freePageReporting: p.freePageReporting ?? false,
    tcgTbSizeMiB: p.tcgTbSizeMiB ?? 0,
    guest: [...[p.kernel, p.initrd, p.systemDisk].map(fileFingerprint), guestImageHash(p.kernel)],
    qemu: qemuVersion(p.qemuBinary ?? DEFAULT_QEMU_BINARY),
  };
}

export function templateKey(inputs: TemplateInputs): string {
  return createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 24);
}

function fileFingerprint(path: string | undefined): string {
  if (!path) return '-';
  const st = statSync(path);
  return `${path}:${st.size}:${Math.round(st.mtimeMs)}:${st.ino}`;
}

/** The guest image build's own input hash, when the kernel sits in a built guest image. */
function guestImageHash(kernel: string): string {
  const manifest = readJsonFile<{ hash?: string }>(join(dirname(kernel), 'manifest.json'));
  return manifest?.hash ?? '-';
}

const qemuVersions = new Map<string, string>();

/** `qemu-system-x86_64 --version` and the binary's fingerprint: a QEMU upgrade makes new templates. */
function qemuVersion(binary: string): string {
  let v = qemuVersions.get(binary);
  if (v === undefined) {
    const version = execFileSync(binary, ['--version'], { encoding: 'utf8', timeout: 10_000 }).split('\n')[0].trim();
    const path = binary.includes('/') ? binary : execFileSync('sh', ['-c', 'command -v "$1"', 'sh', binary], { encoding: 'utf8' }).trim();
    v = `${version} ${fileFingerprint(path)}`;
    qemuVersions.set(binary, v);
  }
  return v;
}

/**
 * Turns the all-zero pages of a template's RAM file into holes (`fallocate --dig-holes`):
 * about a sixth of what a booted guest touched is zeroes again (measured: 26 of 148 MiB), and
 * every clone and the template directory itself would otherwise keep them in memory. A clone
 * reading such a page gets zeroes, as before. Best effort: a file left as it was is still a
 * good template.
 */
function digZeroPages(key: string, ramFile: string): void {
  const before = statSync(ramFile).blocks * 512;
  const t = performance.now();
  try {
    execFileSync('fallocate', ['--dig-holes', ramFile], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000 });
  } catch (e) {
    log.warn({ key, err: messageOf(e) }, 'could not turn the zero pages of the template RAM file into holes; it keeps them');
    return;
  }
  const after = statSync(ramFile).blocks * 512;
  log.info({ key, residentBefore: before, residentAfter: after, ms: Math.round(performance.now() - t) }, 'template RAM file: zero pages made holes');
}

async function waitForConsole(vm: Vm, pattern: RegExp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(consoleTail(vm.paths, 4096))) {
    if (vm.state !== 'running') throw failedPrecondition(`template VM ${vm.id} ended before its save`);
    if (Date.now() > deadline) throw failedPrecondition(`template VM ${vm.id}: the guest agent did not report the host leaving within ${timeoutMs} ms`);
    await sleep(20);
  }
}
