import { rm } from 'node:fs/promises';
import { messageOf } from '../errors.js';
import { logger } from '../log.js';
import { SandboxShare } from '../volume/sandbox-share.js';
import type { ContainerService } from './container-service.js';
import type { PodContext } from './pod-context.js';
import { containerNameKey, sandboxNameKey } from './pod-index.js';
import type { SandboxService } from './sandbox-service.js';
import type { GuestAgent } from './guest-agent.js';

const log = logger('pod-recovery');

/** How long a restarted daemon waits for a running VM's agent to answer. */
const AGENT_RECONNECT_MS = 15_000;
/**
 * How long one sandbox's recovery may take once its agent answered (H4): the
 * CRI socket is served only after recovery, so a guest that never answers
 * must cost its own sandbox (NOTREADY, VM stopped), not the node's runtime.
 */
export const SANDBOX_RECOVERY_MS = 10_000;
/** Guest-listed containers without a record deleted per sandbox at most; a guest may list thousands. */
const MAX_STRAY_DELETES = 64;
const CONTAINER_ID = /^[0-9a-f]{64}$/;

/**
 * Rebuilds memory from the store after podvisord (re)starts, without touching
 * running pods: every record goes back into the index with its names
 * reserved; a sandbox that was READY gets its VM back (its backend's reattach) and its
 * agent reconnected; each unfinished container is checked with the agent, so
 * one that exited while the daemon was down is reported EXITED with its code,
 * and the log of one still running is appended to again. A VM that is gone
 * turns its sandbox NOTREADY. Directories without a record (a crash during
 * RunPodSandbox) are cleaned up, their VM included.
 */
export async function recover(ctx: PodContext, sandboxes: SandboxService, containers: ContainerService, deadlineMs = SANDBOX_RECOVERY_MS): Promise<void> {
  const { sandboxes: loaded, orphans } = await ctx.store.loadAll();
  // The daemon's uid allocator: a reattached QEMU's uid is taken in it again, and goes back when
  // that QEMU ends (or its reattach fails), as a launched one's does.
  const users = ctx.settings.vmLaunch?.confinement?.users;
  for (const id of orphans) {
    log.warn({ sandbox: id }, 'removing a sandbox left half-made by an earlier podvisord');
    // No record says which backend started it: each is asked about the run directory.
    for (const backend of ctx.allVmBackends()) {
      try {
        const vm = await backend.reattach(sandboxes.runDir(id), { timeoutMs: 5_000, users });
        await vm.destroy({ timeoutMs: 5_000 });
      } catch {
        // Not reattachable (QMP gone or never up): its QEMU may still run; kill it before its run directory goes.
        await backend.killLeftover(sandboxes.runDir(id)).catch(() => false);
      }
    }
    await rm(sandboxes.runDir(id), { recursive: true, force: true });
    // CNI DEL from the attachment written before ADD, then the netns: no IP, rule or veth outlives the crash.
    await ctx.network?.release(id).catch((e) => log.warn({ sandbox: id, err: messageOf(e) }, 'could not release its pod network'));
    await SandboxShare.removeLeftover(sandboxes.shareDir(id)).catch((e) => log.warn({ sandbox: id, err: messageOf(e) }, 'could not remove its volume share'));
    await ctx.store.removeSandbox(id);
  }

  for (const { sandbox, containers: list } of loaded) {
    ctx.index.addSandbox(sandbox);
    ctx.index.reserveName(sandboxNameKey(sandbox.config.metadata), sandbox.id, 'sandbox');
    for (const c of list) {
      ctx.index.addContainer(c);
      ctx.index.reserveName(containerNameKey(c.sandboxId, c.config.metadata), c.id, 'container');
    }
  }

  await Promise.all(loaded.map(async ({ sandbox }) => {
    if (sandbox.state !== 'ready') return;
    let attached = false;
    try {
      // Logs first: the agent replays the output it queued while no daemon listened as soon as we subscribe.
      for (const c of ctx.index.containersOf(sandbox.id)) if (c.state === 'running') await containers.openLog(c);
      const vm = await ctx.vmBackend(sandbox.vm?.backend).reattach(sandboxes.runDir(sandbox.id), { users });
      let agent;
      try {
        agent = await ctx.connectAgent(vm.agentSocket, Date.now() + AGENT_RECONNECT_MS);
      } catch (e) {
        // A VM whose agent does not answer cannot run containers: stop it rather than leave it half-alive.
        await vm.stop({ timeoutMs: 5_000 }).catch(() => undefined);
        throw e;
      }
      if (sandbox.vm) sandbox.vm.pid = vm.pid;
      const rt = sandboxes.attach(sandbox, vm, agent);
      attached = true;
      let abandoned = false;
      let timer: NodeJS.Timeout | undefined;
      const overdue = new Promise<'overdue'>((resolve) => { timer = setTimeout(() => resolve('overdue'), deadlineMs); });
      const checked = reconcileContainers(ctx, containers, sandbox.id, rt.agent, () => abandoned);
      const outcome = await Promise.race([checked, overdue]).finally(() => clearTimeout(timer));
      if (outcome === 'overdue') {
        abandoned = true;
        checked.catch(() => undefined); // it fails once the agent is closed; the sandbox is already given up
        await sandboxes.abandon(sandbox.id, `its agent did not finish answering within ${deadlineMs / 1000} s after podvisord restarted`);
        return;
      }
      log.info({ sandbox: sandbox.id, pid: vm.pid }, 'sandbox recovered');
      // CNI CHECK in the background: a network that broke while podvisord was down is worth a warning, not a slower start.
      ctx.network?.check(sandbox.id).then(
        (r) => log.info({ sandbox: sandbox.id, check: r }, 'pod network checked'),
        (e) => log.warn({ sandbox: sandbox.id, err: messageOf(e) }, 'pod network CHECK failed'),
      );
    } catch (e) {
      if (attached) {
        // The VM is there but its guest failed us (or broke the protocol, and is being given up
        // on already: abandon is idempotent): stop it rather than leave it half-alive.
        await sandboxes.abandon(sandbox.id, `recovering the sandbox after podvisord restarted failed (${messageOf(e)})`);
        return;
      }
      // A QEMU still alive behind a QMP that did not answer would run on unseen: a NOTREADY sandbox keeps no VM.
      const killed = await Promise.resolve().then(() => ctx.vmBackend(sandbox.vm?.backend).killLeftover(sandboxes.runDir(sandbox.id))).catch(() => false);
      if (killed) log.warn({ sandbox: sandbox.id }, 'killed its QEMU, which could not be reattached');
      log.warn({ sandbox: sandbox.id, err: messageOf(e) }, 'sandbox VM is gone; marking the sandbox NOTREADY');
      await sandboxes.markNotReady(sandbox, `the pod VM was not running when podvisord restarted (${messageOf(e)})`);
    }
  }));
}

/**
 * Brings one recovered sandbox's container records in line with its guest.
 * Every agent call here has its own deadline, and the whole runs under the
 * sandbox's recovery deadline; `abandoned` stops it from touching records
 * once that passed.
 */
async function reconcileContainers(ctx: PodContext, containers: ContainerService, sandboxId: string, agent: GuestAgent, abandoned: () => boolean): Promise<void> {
  // A CreateContainer cut short by the crash may have left a container in the guest with no record.
  let strays = 0;
  for (const id of await agent.listContainerIds()) {
    if (abandoned()) return;
    if (ctx.index.containerById(id)) continue;
    // Only ids podvisor could have made, and a bounded number: the list is the guest's word.
    if (!CONTAINER_ID.test(id) || ++strays > MAX_STRAY_DELETES) continue;
    log.warn({ sandbox: sandboxId, container: id }, 'deleting a guest container that has no record');
    await agent.deleteContainer(id).catch((e) => log.warn({ container: id, err: messageOf(e) }, 'could not delete it'));
  }
  for (const c of ctx.index.containersOf(sandboxId)) {
    if (c.state === 'exited') continue;
    const st = await agent.containerState(c.id);
    if (abandoned()) return;
    if (st.status === 'exited') {
      await containers.recordExit({ containerId: c.id, exitCode: st.exitCode, oomKilled: st.oomKilled, exitedAtMs: st.exitedAtMs }, false);
    } else if (st.status === 'missing') {
      await containers.markExited(c, { exitCode: 255, reason: 'Error', message: 'the agent did not know this container after podvisord restarted' });
    } else if (st.status === 'running' && c.state !== 'running') {
      // It started but podvisord died before recording it.
      c.state = 'running';
      await ctx.store.saveContainer(c);
      await containers.openLog(c);
    }
  }
}
