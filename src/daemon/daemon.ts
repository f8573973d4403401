import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { PodvisorConfig } from '../config/config.js';
import { startCriServer } from '../cri/server.js';
import { imageHandlers, runtimeHandlers } from '../cri/handlers.js';
import { openPassthrough } from '../cri/passthrough/passthrough.js';
import { routedTables } from '../cri/passthrough/routed-handlers.js';
import type { CriServices } from '../cri/services.js';
import { RuntimeInfo } from '../runtime/runtime-info.js';
import { ImageService } from '../image/image-service.js';
import { SandboxNetworks } from '../network/sandbox-networks.js';
import { connectAgent } from '../pod/agent-adapter.js';
import { podImages } from '../pod/image-adapter.js';
import { createPodServices, podDirs } from '../pod/pod-services.js';
import { logger } from '../log.js';
import { QemuUsers } from '../vm/confinement.js';
import { sweepIdleVmCgroups } from '../vm/cgroup.js';
import { createLibvirtBackend } from '../vm/libvirt/backend.js';
import type { VmBackend } from '../vm/pod-vm.js';
import { startAccelProbe } from '../vm/host.js';
import { StreamingServer } from '../streaming/server.js';
import { startOperatorTools } from './operator-tools.js';

export interface Daemon {
  services: CriServices;
  /** Stops serving and releases the socket. Sandbox VMs are left running on purpose. */
  stop(): Promise<void>;
}

/** Builds the domain services and serves them over the CRI socket. */
export async function startDaemon(config: PodvisorConfig): Promise<Daemon> {
  const shutdown = new AbortController();
  // The KVM probe boots a tiny guest once; it runs while the rest starts, and the first
  // RunPodSandbox waits for its answer (src/vm/host.ts).
  void startAccelProbe({ device: config.vm.kvmDevice, timeoutMs: config.vm.kvmProbeTimeoutMs });
  // Cgroups of VMs that ended while no daemon watched (src/vm/cgroup.ts).
  const swept = sweepIdleVmCgroups(config.vm.cgroupParent);
  if (swept.length > 0) logger('daemon').info({ cgroups: swept }, 'removed cgroups of VMs that ended while podvisord was down');
  const images = new ImageService({ root: config.root, registry: config.registry, maxUnpackedBytes: config.images.maxUnpackedBytes });
  await images.init();
  const dirs = podDirs(config.root, config.state);
  let runtime: RuntimeInfo | undefined;
  const network = new SandboxNetworks({
    confDir: config.cni.confDir,
    binDirs: config.cni.binDirs,
    netnsDir: join(config.state, 'netns'),
    cacheDir: join(config.root, 'cni'),
    podCidr: () => runtime?.currentPodCidr ?? '',
  });
  runtime = new RuntimeInfo(config, network);
  // One uid allocator for every backend's QEMUs (src/vm/confinement.ts).
  const qemuUsers = new QemuUsers(config.vm.qemuUser);
  const vmBackends = await libvirtBackendIfAsked(config, qemuUsers);
  const pods = await createPodServices({
    recordsDir: dirs.recordsDir,
    settings: {
      vmRunRoot: dirs.vmRunRoot, runtimes: config.runtimes, bootTimeoutMs: config.bootTimeoutSeconds * 1000,
      maxParallelLaunches: config.vm.maxParallelLaunches,
      shareMode: config.volumes.shareMode,
      vmLaunch: {
        confinement: {
          users: qemuUsers,
          cgroupParent: config.vm.cgroupParent,
          overheadMiB: config.vm.qemuOverheadMiB,
          pidsMax: config.vm.qemuPidsMax,
        },
        allowNoSeccomp: config.vm.allowNoSeccomp,
        consoleMaxBytes: config.vm.consoleMaxBytes,
      },
      ...(vmBackends ? { vmBackends } : {}),
    },
    images: podImages(images),
    connectAgent,
    network,
  });
  const streaming = new StreamingServer(pods.streams, {
    address: config.streaming.address,
    port: config.streaming.port,
    ...(config.streaming.tls ? { tls: config.streaming.tls } : {}),
    idleTimeoutMs: config.streaming.idleTimeoutSeconds * 1000,
  });
  await streaming.start();
  const services: CriServices = {
    config,
    runtime,
    images,
    pods,
    streaming,
    shutdown: shutdown.signal,
  };
  // [passthrough]: host-namespace and trusted pods go to a co-installed CRI runtime (src/cri/passthrough/).
  const passthrough = config.passthrough.endpoint
    ? await openPassthrough(config.passthrough, config.state, runtime.handlers)
    : undefined;
  const tables = { runtime: runtimeHandlers, image: imageHandlers };
  const server = await startCriServer(services, config.listen, passthrough ? routedTables(tables, passthrough) : tables);
  let tools: Awaited<ReturnType<typeof startOperatorTools>>;
  try {
    tools = await startOperatorTools(config, pods);
  } catch (e) {
    await server.close();
    await streaming.close();
    await pods.detach();
    passthrough?.close();
    throw e;
  }
  return {
    services,
    async stop() {
      shutdown.abort(); // lets event streams end so in-flight calls can drain
      await tools.close();
      await server.close();
      await streaming.close();
      await pods.detach();
      passthrough?.close();
      rmSync(config.listen, { force: true });
    },
  };
}

/**
 * The libvirt VM backend when a runtime handler asks for it (issue 19), connected once now so
 * that a missing binding or an unreachable libvirtd stops podvisord with the reason.
 */
async function libvirtBackendIfAsked(config: PodvisorConfig, users: QemuUsers): Promise<{ libvirt: VmBackend } | undefined> {
  const handlers = Object.entries(config.runtimes).filter(([, p]) => p.backend === 'libvirt').map(([h]) => h);
  if (handlers.length === 0) return undefined;
  const backend = createLibvirtBackend(config.libvirt.uri, users);
  await backend.check();
  logger('daemon').info({ uri: config.libvirt.uri, handlers }, 'libvirt VM backend connected');
  return { libvirt: backend };
}
