import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { invalidArgument, messageOf } from '../errors.js';
import { logger } from '../log.js';
import { agentPortOpened, watchAgentPort } from '../vm/agent-port.js';
import type { PodVm } from '../vm/pod-vm.js';
import { TEMPLATE_NIC_MAC } from '../vm/qemu-args.js';
import type { VmExitInfo } from '../vm/vm.js';
import { SandboxShare } from '../volume/sandbox-share.js';
import { logBytesTotal } from '../metrics/metrics.js';
import { recordBootPhases, recordClonePhases } from './boot-phases.js';
import { GuestLogFile } from './guest-log-file.js';
import { nowNanos } from './clock.js';
import type { ContainerService } from './container-service.js';
import { filterSandboxes, type SandboxFilter } from './filters.js';
import type { GuestAgent } from './guest-agent.js';
import { rejectHostNamespaces } from './host-namespaces.js';
import { newId } from './ids.js';
import type { PodContext, SandboxRuntime } from './pod-context.js';
import { sandboxNameKey } from './pod-index.js';
import { abortError } from './launch-slots.js';
import { guestNic, networkRequest } from './sandbox-network.js';
import type { SandboxConfig, SandboxRecord } from './records.js';
import { SIGKILL } from './signals.js';
import { podResources, profileForHandler, sizePodVm, templateTuningFor, vmProfileFor } from './vm-sizing.js';
import type { VmTemplate } from './vm-templates.js';

const log = logger('pod-sandboxes');

/** How long StopPodSandbox waits for killed containers to report their exit before stopping the VM anyway. */
const CONTAINER_KILL_WAIT_MS = 5_000;
/** Each phase of a VM stop (agent shutdown, QMP quit, SIGKILL). */
const VM_STOP_PHASE_MS = 5_000;

/** Exit code recorded for a container whose VM went away under it (as if SIGKILLed). */
const VM_DEATH_EXIT_CODE = 137;

export function validateSandboxConfig(config: SandboxConfig): void {
  const m = config.metadata;
  for (const [field, v] of [['name', m.name], ['namespace', m.namespace], ['uid', m.uid]] as const) {
    if (v === '') throw invalidArgument(`sandbox metadata.${field} is empty`);
  }
  if (config.hostname.length > 64 || /[^A-Za-z0-9.-]/.test(config.hostname)) {
    throw invalidArgument(`sandbox hostname "${config.hostname}" is not a valid host name (at most 64 letters, digits, '.', '-')`);
  }
  rejectHostNamespaces(config.namespaceOptions, `pod "${m.namespace}/${m.name}"`);
  for (const k of Object.keys(config.sysctls)) {
    if (!/^[a-z0-9_.\/-]+$/.test(k) || k.includes('..')) throw invalidArgument(`sysctl name "${k}" is not valid`);
  }
}

/**
 * Pod sandboxes: one QEMU VM each, with the guest agent. RunPodSandbox undoes
 * everything it made when any step fails; Stop/Remove are idempotent.
 */
export class SandboxService {
  constructor(private readonly ctx: PodContext, private readonly containers: ContainerService) {}

  // ---------------------------------------------------------------- run

  /**
   * `signal` is the caller giving up (deadline, cancellation): a call still waiting for a
   * launch slot leaves the queue, one that is booting stops and undoes what it made.
   */
  async run(config: SandboxConfig, runtimeHandler: string, opts: { signal?: AbortSignal } = {}): Promise<string> {
    validateSandboxConfig(config);
    const profile = profileForHandler(runtimeHandler, this.ctx.settings.runtimes);
    const size = sizePodVm(profile, podResources(config), config.overhead);
    const id = newId();
    const nameKey = sandboxNameKey(config.metadata);
    this.ctx.index.reserveName(nameKey, id, 'sandbox');
    const undo: Array<[string, () => Promise<unknown>]> = [];
    const { signal } = opts;
    const gaveUp = signal ? new Promise<never>((_, reject) => {
      if (signal.aborted) reject(abortError(signal));
      signal.addEventListener('abort', () => reject(abortError(signal)), { once: true });
    }) : undefined;
    gaveUp?.catch(() => undefined); // observed where the boot waits, and at each step below
    const checkCaller = () => {
      if (signal?.aborted) throw abortError(signal);
    };
    let releaseSlot: (() => void) | undefined;
    try {
      // Waiting for a slot holds nothing yet, so a caller that gives up here leaves nothing behind.
      const tQueue = performance.now();
      releaseSlot = await this.ctx.launchSlots.acquire(signal);
      const queuedMs = performance.now() - tQueue;
      // The directory first: if podvisord dies during the boot, recovery finds it without a record and cleans up.
      await this.ctx.store.prepareSandboxDir(id);
      undo.push(['remove sandbox directory', () => this.ctx.store.removeSandbox(id)]);
      const runDir = this.runDir(id);
      // microvm has no NIC hot-plug: QEMU starts in the pod netns with its NIC on the tap, and CNI ADD
      // runs while the VM boots (the guest takes the CNI interface's MAC afterwards).
      undo.push(['release pod network', async () => this.ctx.network?.release(id)]);
      const tNet = performance.now();
      const backend = this.ctx.vmBackend(profile.backend);
      // A backend whose QEMU opens the tap in the host netns (libvirt) brings the tap into the pod netns itself.
      const prepared = await this.ctx.network?.prepare(id, { vmMovesTapIn: backend.tapInHostNetns });
      const attaching = prepared ? this.ctx.network!.attach(prepared, networkRequest(id, config)) : Promise.resolve(undefined);
      const attachFailed = new Promise<never>((_, reject) => void attaching.catch(reject));
      attachFailed.catch(() => undefined); // observed in waitReady or below
      let attachError: unknown;
      attaching.catch((e) => { attachError = e; });
      const vmProfile = vmProfileFor(profile, size);
      // Waits for the template's build on first use; undefined (logged) means a cold boot. Templates
      // are podvisor's own QEMU launcher's (a libvirt-started VM cannot be restored from one).
      const clonable = profile.template && (profile.backend ?? 'qemu') === 'qemu';
      let template = clonable ? await this.ctx.templates.forSandbox({ handler: runtimeHandler, profile: vmProfile, nic: !!prepared, tuning: templateTuningFor(profile) }) : undefined;
      const t0 = performance.now();
      let share: SandboxShare | undefined;
      undo.push(['remove volume share', async () => share?.destroy()]);
      let agent: GuestAgent | undefined;
      let qmpReady = 0;
      undo.push(['close agent connection', async () => agent?.close()]);
      const launch = async (clone?: VmTemplate): Promise<PodVm> => {
        // The share first: QEMU connects to a virtio-fs helper at start-up (not hot-pluggable on microvm).
        // A clone's RAM is a private mapping of its template's, which virtiofsd cannot map: a clone takes
        // share mode copy, which needs no device (its device set stays the template's).
        const shareMode = clone ? 'copy' : this.ctx.settings.shareMode ?? 'virtiofs';
        if (share && share.mode !== shareMode) {
          await share.destroy(); // a clone that failed; the cold boot after it uses the configured mode
          share = undefined;
        }
        if (!share && SandboxShare.available(shareMode)) share = await SandboxShare.create(this.shareDir(id), shareMode);
        return backend.launch({
          id,
          profile: clone?.cloneProfile ?? vmProfile,
          runDir,
          // A clone's NIC keeps the template's MAC until the guest takes the pod's (configureNetwork).
          ...(prepared ? { netns: prepared.netns, tap: clone ? { ...prepared.tap, mac: TEMPLATE_NIC_MAC } : prepared.tap } : {}),
          ...this.ctx.settings.vmLaunch,
          ...(clone ? { restoreFrom: clone.stateFile } : {}),
          ...(share?.launchOption ? { sharedFs: share.launchOption } : {}),
          readyTimeoutMs: this.ctx.settings.bootTimeoutMs,
          waitReady: async (_vm, deadline) => {
            qmpReady = performance.now();
            // A failed ADD ends the boot at once (launch then stops the VM) instead of after it.
            const port = agentPortOpened(_vm.qmp);
            const connecting = this.ctx.connectAgent(_vm.agentSocket, deadline, { portOpened: port.opened });
            try {
              agent = await Promise.race([connecting, attachFailed, ...(gaveUp ? [gaveUp] : [])]);
            } catch (e) {
              connecting.then((a) => a.close(), () => undefined);
              throw e;
            } finally {
              port.dispose();
            }
          },
        });
      };
      const vm = await (async () => {
        if (template) {
          try {
            return await launch(template);
          } catch (e) {
            if (attachError !== undefined) throw e; // the network failed, not the template
            agent?.close();
            agent = undefined;
            this.ctx.templates.discard(template, messageOf(e));
            template = undefined;
          }
        }
        return launch();
      })().catch(async (e) => {
        prepared?.tap.handoff?.failed(e); // no VM to bring the tap in: the ADD waiting for it ends now
        await attaching.catch(() => undefined); // the network undo must not race a running ADD
        throw e;
      });
      undo.push(['destroy VM', () => vm.destroy({ timeoutMs: VM_STOP_PHASE_MS })]);
      if (!agent) throw new Error('the VM became ready without an agent connection');
      checkCaller();
      // A clone's first call: its own clock and RNG before anything in the guest draws on them.
      if (template) await agent.renewIdentity();
      const t1 = performance.now();
      // The boot is done: the next sandbox may boot while this guest sets itself up (NIC, hostname,
      // mounts: a few RPCs, seconds under emulation). A failure from here on releases it again (no-op).
      releaseSlot();
      log.info({ sandbox: id, bootMs: Math.round(t1 - t0) }, 'sandbox VM booted; launch slot released');
      const marks = { launchStarted: t0, qmpReady, agentReady: t1 };
      const phases = template ? recordClonePhases(marks, vm.restoreMs ?? 0) : await recordBootPhases(agent, marks);
      const tPhases = performance.now();
      const net = await attaching;
      const tCni = performance.now();
      const hostname = config.hostname || config.metadata.name.slice(0, 63);
      if (net) await agent.configureNetwork({ ...guestNic(net), ...(template ? { mac: TEMPLATE_NIC_MAC } : {}) });
      const tNic = performance.now();
      const podIps = net?.attachment.addresses.map((a) => a.ip) ?? [];
      const guestFiles = await agent.setupSandbox({ hostname, dns: config.dnsConfig, sysctls: config.sysctls, podIps,
        ...(share?.guestTag ? { sharedFsTag: share.guestTag } : {}),
      });
      const t2 = performance.now();
      checkCaller();
      const record: SandboxRecord = {
        id,
        config,
        runtimeHandler,
        state: 'ready',
        createdAt: nowNanos(),
        vm: {
          runDir, pid: vm.pid, accelerator: vm.accel, profile: runtimeHandler, vcpus: size.vcpus, memoryMiB: size.memoryMiB, backend: backend.name,
          ...(template ? { template: template.key } : {}),
        },
        network: net ? { mode: 'cni', ips: podIps, netns: net.netns, networkName: net.networkName } : { mode: 'loopback', ips: [] },
        images: [],
        guestFiles,
        ...(share ? { share: share.state } : {}),
      };
      await this.ctx.store.saveSandbox(record);
      this.ctx.index.addSandbox(record);
      this.attach(record, vm, agent);
      log.info({
        sandbox: id, pod: `${config.metadata.namespace}/${config.metadata.name}`, handler: runtimeHandler, pid: vm.pid, ...size,
        boot: template ? 'template' : 'cold', ...(vm.restoreMs !== undefined ? { restoreMs: Math.round(vm.restoreMs) } : {}),
        queuedMs: Math.round(queuedMs), netnsMs: Math.round(t0 - tNet), bootMs: Math.round(t1 - t0), bootPhases: phases, cniWaitMs: Math.round(tCni - t1), setupMs: Math.round(t2 - tCni), recordMs: Math.round(performance.now() - t2),
        // within cniWaitMs: the boot-phase health call; within setupMs: the guest NIC (bench/pod-network splits them out)
        phasesMs: Math.round(tPhases - t1), nicMs: Math.round(tNic - tCni),
      }, 'sandbox ready');
      return id;
    } catch (e) {
      for (const [what, step] of undo.reverse()) {
        await step().catch((err) => log.warn({ sandbox: id, step: what, err: messageOf(err) }, 'cleanup after failed RunPodSandbox'));
      }
      // After the undo: a VM being torn down still holds its share of the host.
      releaseSlot?.();
      this.ctx.index.releaseName(nameKey, id);
      throw e;
    }
  }

  runDir(id: string): string {
    return join(this.ctx.settings.vmRunRoot, id);
  }

  shareDir(id: string): string {
    return join(this.ctx.settings.shareRoot ?? join(dirname(this.ctx.settings.vmRunRoot), 'volumes'), id);
  }

  /** Makes a live VM and agent part of a sandbox: output, exits and the VM's death reach the records. */
  attach(record: SandboxRecord, vm: PodVm, agent: GuestAgent): SandboxRuntime {
    const rt: SandboxRuntime = { vm, agent, stopping: false, imagePlugs: new Map(), ...(record.share ? { share: SandboxShare.open(record.share) } : {}) };
    this.ctx.runtimes.set(record.id, rt);
    rt.share?.attachAgent(agent);
    this.ctx.outputThrottle(record.id).bind({ pause: () => agent.pauseOutput(), resume: () => agent.resumeOutput() });
    // A guest speaks only for its own sandbox (H1): an event naming any other container is dropped and counted.
    const own = (containerId: string, kind: string): boolean => {
      if (this.ctx.index.containerById(containerId)?.sandboxId === record.id) return true;
      const n = (this.ctx.foreignEvents.get(record.id) ?? 0) + 1;
      this.ctx.foreignEvents.set(record.id, n);
      if (n === 1 || n % 1000 === 0) log.warn({ sandbox: record.id, kind, dropped: n }, 'dropped guest events naming a container outside this sandbox');
      return false;
    };
    agent.onOutput((ev) => {
      if (!own(ev.containerId, 'output')) return;
      logBytesTotal.inc({ sandbox: record.id }, ev.data.length);
      this.containers.handleOutput(ev);
    });
    // Root in the guest can close the agent's port and let another process open it: the agent client checks its session then.
    const port = watchAgentPort(vm.qmp, () => agent.portChanged());
    vm.once('exit', () => port.dispose());
    const guestLog = new GuestLogFile(this.runDir(record.id));
    agent.onGuestLog((line) => guestLog.append(line));
    vm.once('exit', () => guestLog.close());
    agent.onExit((ev) => {
      if (!own(ev.containerId, 'exit')) return;
      this.containers.recordExit(ev).catch((e) => log.error({ container: ev.containerId, err: messageOf(e) }, 'recording a container exit failed'));
    });
    agent.onProtocolError((reason) => {
      this.abandon(record.id, `the pod VM broke the agent protocol (${reason})`).catch((e) => log.error({ sandbox: record.id, err: messageOf(e) }, 'handling a protocol error failed'));
    });
    vm.once('exit', (info) => {
      if (rt.stopping) return;
      this.handleVmDeath(record.id, info).catch((e) => log.error({ sandbox: record.id, err: messageOf(e) }, 'handling VM death failed'));
    });
    return rt;
  }

  /** QEMU went away without being asked: the sandbox is NOTREADY and its containers EXITED, saying why. */
  private async handleVmDeath(id: string, info: VmExitInfo): Promise<void> {
    await this.ctx.locks.run(id, async () => {
      const record = this.ctx.index.findSandbox(id);
      if (!record || record.id !== id || record.state !== 'ready') return;
      log.warn({ sandbox: id, reason: info.reason, detail: info.detail }, 'sandbox VM died');
      const rt = this.ctx.runtimes.get(id);
      this.ctx.runtimes.delete(id);
      rt?.agent.close();
      await this.markNotReady(record, `the pod VM exited unexpectedly (${info.reason}): ${info.detail}`);
    });
  }

  /**
   * Gives up on a sandbox whose guest cannot be trusted or waited for: it sent
   * something the host cannot decode (C1), or it did not answer in time during
   * recovery (H4). Its agent channel is closed, its VM stopped, and the sandbox
   * turns NOTREADY saying why; no other sandbox is touched.
   */
  async abandon(id: string, reason: string): Promise<void> {
    await this.ctx.locks.run(id, async () => {
      const record = this.ctx.index.findSandbox(id);
      const rt = this.ctx.runtimes.get(id);
      if (!record || record.id !== id || !rt) return;
      rt.stopping = true;
      this.ctx.runtimes.delete(id);
      rt.agent.close();
      await rt.vm.stop({ timeoutMs: VM_STOP_PHASE_MS }).catch((e) => log.warn({ sandbox: id, err: messageOf(e) }, 'stopping the VM of a guest that broke the protocol'));
      log.warn({ sandbox: id, reason }, 'giving up on the sandbox: stopping its VM');
      await this.markNotReady(record, `${reason}; the pod VM was stopped`);
    });
  }

  /** Marks every unfinished container EXITED and the sandbox NOTREADY; used for VM death and failed recovery. */
  async markNotReady(record: SandboxRecord, reason: string): Promise<void> {
    for (const c of this.ctx.index.containersOf(record.id)) {
      if (c.state === 'exited') continue;
      await this.containers.markExited(c, {
        exitCode: c.state === 'running' || c.state === 'unknown' ? VM_DEATH_EXIT_CODE : 255,
        reason: 'PodVMExited',
        message: reason,
      });
    }
    record.state = 'notready';
    record.notReadyReason = reason;
    await this.ctx.store.saveSandbox(record);
  }

  // ---------------------------------------------------------------- stop / remove

  /** Kills the pod's containers and stops its VM. Stopping a stopped sandbox is a no-op. */
  async stop(query: string): Promise<void> {
    const record = this.ctx.index.sandbox(query);
    await this.ctx.locks.run(record.id, () => this.stopLocked(record));
  }

  private async stopLocked(record: SandboxRecord): Promise<void> {
    const rt = this.ctx.runtimes.get(record.id);
    // How long each step took (the "sandbox stopped" line; bench/pod-stop.ts reads it).
    let split: { killMs: number; vmStopMs: number } | undefined;
    if (rt) {
      rt.stopping = true;
      const live = this.ctx.index.containersOf(record.id).filter((c) => c.state === 'running' || c.state === 'unknown');
      const t0 = performance.now();
      // SIGKILL first so that exit codes are the real ones, not "the VM vanished". The whole step is
      // bounded by the kill wait: a guest that never answers the signal call (its deadline is the
      // agent's 60 s default) must not hold the stop; the call ends with the channel at the latest.
      for (const c of live) void rt.agent.signalContainer(c.id, SIGKILL).catch(() => undefined);
      await Promise.all(live.map((c) => this.waitExit(c.id, CONTAINER_KILL_WAIT_MS)));
      const t1 = performance.now();
      await rt.vm.stop({ graceful: () => rt.agent.shutdown(), timeoutMs: VM_STOP_PHASE_MS });
      split = { killMs: Math.round(t1 - t0), vmStopMs: Math.round(performance.now() - t1) };
      rt.agent.close();
      this.ctx.runtimes.delete(record.id);
    }
    for (const c of this.ctx.index.containersOf(record.id)) {
      if (c.state !== 'exited') {
        await this.containers.markExited(c, { exitCode: c.state === 'created' ? 255 : 137, reason: 'Error', message: 'the pod sandbox was stopped' });
      }
    }
    if (record.share) {
      // No container can run any more: let go of every host path now, not at removal (kubelet may tear its volumes down).
      await (rt?.share ?? SandboxShare.open(record.share)).destroy();
      record.share = undefined;
      await this.ctx.store.saveSandbox(record);
    }
    if (record.state !== 'notready' || rt) {
      record.state = 'notready';
      await this.ctx.store.saveSandbox(record);
      log.info({ sandbox: record.id, ...split }, 'sandbox stopped');
    }
    // CNI DEL once QEMU no longer holds the tap; idempotent, and also after a restart (the attachment is on disk).
    await this.ctx.network?.detach(record.id);
  }

  private waitExit(containerId: string, ms: number): Promise<void> {
    const c = this.ctx.index.findContainer(containerId);
    if (!c || c.state === 'exited') return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(finish, ms);
      this.ctx.exits.once(`exited:${containerId}`, finish);
      function finish() {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  /** Stops the sandbox if needed and removes it, its containers and its VM files. Unknown ids are fine. */
  async remove(query: string): Promise<void> {
    const found = this.ctx.index.findSandbox(query);
    if (!found) return;
    await this.ctx.locks.run(found.id, async () => {
      const record = this.ctx.index.findSandbox(found.id);
      if (!record) return;
      await this.stopLocked(record);
      for (const c of this.ctx.index.containersOf(record.id)) await this.containers.forget(c, false);
      await rm(this.runDir(record.id), { recursive: true, force: true });
      await this.ctx.network?.release(record.id);
      await this.ctx.store.removeSandbox(record.id);
      this.ctx.index.deleteSandbox(record.id);
      this.ctx.index.releaseName(sandboxNameKey(record.config.metadata), record.id);
      logBytesTotal.remove({ sandbox: record.id });
      log.info({ sandbox: record.id }, 'sandbox removed');
    });
  }

  // ---------------------------------------------------------------- queries

  status(query: string): { record: SandboxRecord; runtime?: SandboxRuntime } {
    const record = this.ctx.index.sandbox(query);
    return { record, runtime: this.ctx.runtimes.get(record.id) };
  }

  list(filter: SandboxFilter): SandboxRecord[] {
    return filterSandboxes(this.ctx.index, filter);
  }
}
