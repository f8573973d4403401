import { join } from 'node:path';
import type { CriClient } from '../../src/cri/client.js';
import { unary } from '../helpers/daemon.js';
import { containerConfig, sandboxConfig, waitContainerState } from '../helpers/cri.js';

/** What the pass-through e2e tests share: starting a pod with one container, and removing every pod. */

export interface PodOptions {
  /** Folder the pod's log_directory goes under. */
  logRoot: string;
  /** The test containerd's cgroup parent (kubelet always sends a cgroup_parent; containerd's pod stats read it). */
  cgroupParent: string;
  image: string;
  handler?: string;
  command?: string[];
  /** A VM pod boots under TCG on a loaded machine: minutes. */
  timeoutMs?: number;
}

/** Runs a sandbox and one container in it through `client` (podvisord) and waits for it to run. */
export async function runPod(client: CriClient, name: string, extra: Record<string, unknown>, opts: PodOptions) {
  const linux = { ...((extra.linux as object | undefined) ?? {}), cgroup_parent: `${opts.cgroupParent}/pod${name}` };
  const cfg = sandboxConfig(name, join(opts.logRoot, name), { ...extra, linux });
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const sandboxId = (await unary(client.runtime, 'RunPodSandbox', { config: cfg, runtime_handler: opts.handler ?? '' }, { deadline: Date.now() + timeoutMs })).pod_sandbox_id;
  const containerId = (await unary(client.runtime, 'CreateContainer', {
    pod_sandbox_id: sandboxId, config: containerConfig('main', opts.image, opts.command ?? ['sleep', '3600']), sandbox_config: cfg,
  })).container_id;
  await unary(client.runtime, 'StartContainer', { container_id: containerId });
  await waitContainerState(client, containerId, 'CONTAINER_RUNNING', timeoutMs);
  return { sandboxId, containerId, cfg };
}

/** Removes every pod podvisord lists (VM and pass-through); a daemon already gone is left to the fixtures' clean-up. */
export async function removeAllPods(client: CriClient | undefined): Promise<void> {
  if (!client) return;
  try {
    const { items } = await unary(client.runtime, 'ListPodSandbox', {});
    for (const s of items) await unary(client.runtime, 'RemovePodSandbox', { pod_sandbox_id: s.id });
  } catch {
    /* the daemon may be gone: VM pidfiles and containerd's own clean-up catch what is left */
  }
}

/** A sandbox config fragment asking for host namespaces; kubelet sends no hostname for a hostNetwork pod. */
export function hostNamespaces(network: string, pid = 'CONTAINER') {
  return {
    ...(network === 'NODE' ? { hostname: '' } : {}),
    linux: { security_context: { namespace_options: { network, pid, ipc: 'POD' } } },
  };
}
