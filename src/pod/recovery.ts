import { rm } from 'node:fs/promises';
import { messageOf } from '../errors.js';
import { logger } from '../log.js';
import { Vm } from '../vm/vm.js';
import type { ContainerService } from './container-service.js';
import type { PodContext } from './pod-context.js';
import { containerNameKey, sandboxNameKey } from './pod-index.js';
import type { SandboxService } from './sandbox-service.js';

const log = logger('pod-recovery');

/** How long a restarted daemon waits for a running VM's agent to answer. */
const AGENT_RECONNECT_MS = 15_000;

/**
 * Rebuilds memory from the store after podvisord (re)starts, without touching
 * running pods: every record goes back into the index with its names
 * reserved; a sandbox that was READY gets its VM back (Vm.reattach) and its
 * agent reconnected; each unfinished container is checked with the agent, so
 * one that exited while the daemon was down is reported EXITED with its code,
 * and the log of one still running is appended to again. A VM that is gone
 * turns its sandbox NOTREADY. Directories without a record (a crash during
 * RunPodSandbox) are cleaned up, their VM included.
 */
export async function recover(ctx: PodContext, sandboxes: SandboxService, containers: ContainerService): Promise<void> {
  const { sandboxes: loaded, orphans } = await ctx.store.loadAll();
  for (const id of orphans) {
    log.warn({ sandbox: id }, 'removing a sandbox left half-made by an earlier podvisord');
    try {
      const vm = await Vm.reattach(sandboxes.runDir(id), { timeoutMs: 5_000 });
      await vm.destroy({ timeoutMs: 5_000 });
    } catch {
      /* no VM: nothing to stop */
    }
    await rm(sandboxes.runDir(id), { recursive: true, force: true });
    // CNI DEL from the attachment written before ADD, then the netns: no IP, rule or veth outlives the crash.
    await ctx.network?.release(id).catch((e) => log.warn({ sandbox: id, err: messageOf(e) }, 'could not release its pod network'));
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
    try {
      // Logs first: the agent replays the output it queued while no daemon listened as soon as we subscribe.
      for (const c of ctx.index.containersOf(sandbox.id)) if (c.state === 'running') await containers.openLog(c);
      const vm = await Vm.reattach(sandboxes.runDir(sandbox.id));
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
      // A CreateContainer cut short by the crash may have left a container in the guest with no record.
      for (const id of await rt.agent.listContainerIds()) {
        if (ctx.index.findContainer(id)?.id === id) continue;
        log.warn({ sandbox: sandbox.id, container: id }, 'deleting a guest container that has no record');
        await rt.agent.deleteContainer(id).catch((e) => log.warn({ container: id, err: messageOf(e) }, 'could not delete it'));
      }
      for (const c of ctx.index.containersOf(sandbox.id)) {
        if (c.state === 'exited') continue;
        const st = await rt.agent.containerState(c.id);
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
      log.info({ sandbox: sandbox.id, pid: vm.pid }, 'sandbox recovered');
      // CNI CHECK in the background: a network that broke while podvisord was down is worth a warning, not a slower start.
      ctx.network?.check(sandbox.id).then(
        (r) => log.info({ sandbox: sandbox.id, check: r }, 'pod network checked'),
        (e) => log.warn({ sandbox: sandbox.id, err: messageOf(e) }, 'pod network CHECK failed'),
      );
    } catch (e) {
      log.warn({ sandbox: sandbox.id, err: messageOf(e) }, 'sandbox VM is gone; marking the sandbox NOTREADY');
      await sandboxes.markNotReady(sandbox, `the pod VM was not running when podvisord restarted (${messageOf(e)})`);
    }
  }));
}
