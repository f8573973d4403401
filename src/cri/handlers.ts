import type { ImageHandlerTable, RuntimeHandlerTable } from './rpc.js';
import * as runtime from './runtime.js';
import * as sandboxes from './sandboxes.js';
import * as containers from './containers.js';
import * as stats from './stats.js';
import * as events from './events.js';
import * as images from './images.js';
import * as streaming from './streaming.js';

/**
 * Which RPCs podvisor serves, and where each one's code is: one module per
 * CRI resource (docs/ARCHITECTURE.md, "CRI front door"), holding the handler
 * and its request/response mapping. An RPC missing here answers UNIMPLEMENTED
 * with its name, so kubelet and operators see exactly what is not there yet.
 */
export const runtimeHandlers: RuntimeHandlerTable = {
  Version: runtime.version,
  Status: runtime.status,
  RuntimeConfig: runtime.runtimeConfig,
  UpdateRuntimeConfig: runtime.updateRuntimeConfig,

  RunPodSandbox: sandboxes.runPodSandbox,
  StopPodSandbox: sandboxes.stopPodSandbox,
  RemovePodSandbox: sandboxes.removePodSandbox,
  PodSandboxStatus: sandboxes.podSandboxStatus,
  ListPodSandbox: sandboxes.listPodSandbox,
  UpdatePodSandboxResources: sandboxes.updatePodSandboxResources,
  StreamPodSandboxes: sandboxes.streamPodSandboxes,

  CreateContainer: containers.createContainer,
  StartContainer: containers.startContainer,
  StopContainer: containers.stopContainer,
  RemoveContainer: containers.removeContainer,
  ContainerStatus: containers.containerStatus,
  ListContainers: containers.listContainers,
  ExecSync: containers.execSync,
  ReopenContainerLog: containers.reopenContainerLog,
  UpdateContainerResources: containers.updateContainerResources,
  StreamContainers: containers.streamContainers,

  Exec: streaming.exec,
  Attach: streaming.attach,
  PortForward: streaming.portForward,

  ContainerStats: stats.containerStats,
  ListContainerStats: stats.listContainerStats,
  PodSandboxStats: stats.podSandboxStats,
  ListPodSandboxStats: stats.listPodSandboxStats,
  ListMetricDescriptors: stats.listMetricDescriptors,
  ListPodSandboxMetrics: stats.listPodSandboxMetrics,
  StreamContainerStats: stats.streamContainerStats,
  StreamPodSandboxStats: stats.streamPodSandboxStats,
  StreamPodSandboxMetrics: stats.streamPodSandboxMetrics,

  GetContainerEvents: events.getContainerEvents,
};

export const imageHandlers: ImageHandlerTable = {
  PullImage: images.pullImage,
  ImageStatus: images.imageStatus,
  ListImages: images.listImages,
  RemoveImage: images.removeImage,
  ImageFsInfo: images.imageFsInfo,
  StreamImages: images.streamImages,
};
