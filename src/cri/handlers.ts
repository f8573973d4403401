import type { ImageHandlerTable, RuntimeHandlerTable } from './rpc.js';
import { version } from './version.js';
import { status } from './status.js';
import { runtimeConfig } from './runtime-config.js';
import { updateRuntimeConfig } from './runtime-config-update.js';
import { runPodSandbox } from './sandbox-run.js';
import { stopPodSandbox } from './sandbox-stop.js';
import { removePodSandbox } from './sandbox-remove.js';
import { podSandboxStatus } from './sandbox-status.js';
import { listPodSandbox } from './sandbox-list.js';
import { createContainer } from './container-create.js';
import { startContainer } from './container-start.js';
import { stopContainer } from './container-stop.js';
import { removeContainer } from './container-remove.js';
import { containerStatus } from './container-status.js';
import { listContainers } from './container-list.js';
import { execSync } from './exec-sync.js';
import { reopenContainerLog } from './reopen-container-log.js';
import { containerStats } from './container-stats.js';
import { listContainerStats } from './container-stats-list.js';
import { podSandboxStats } from './sandbox-stats.js';
import { listPodSandboxStats } from './sandbox-stats-list.js';
import { getContainerEvents } from './container-events.js';
import { pullImage } from './image-pull.js';
import { imageStatus } from './image-status.js';
import { listImages } from './image-list.js';
import { removeImage } from './image-remove.js';
import { imageFsInfo } from './image-fs-info.js';

/**
 * Which RPCs podvisor serves. An RPC missing here answers UNIMPLEMENTED with
 * its name, so kubelet and operators see exactly what is not there yet.
 */
export const runtimeHandlers: RuntimeHandlerTable = {
  Version: version,
  Status: status,
  RuntimeConfig: runtimeConfig,
  UpdateRuntimeConfig: updateRuntimeConfig,
  RunPodSandbox: runPodSandbox,
  StopPodSandbox: stopPodSandbox,
  RemovePodSandbox: removePodSandbox,
  PodSandboxStatus: podSandboxStatus,
  ListPodSandbox: listPodSandbox,
  CreateContainer: createContainer,
  StartContainer: startContainer,
  StopContainer: stopContainer,
  RemoveContainer: removeContainer,
  ContainerStatus: containerStatus,
  ListContainers: listContainers,
  ExecSync: execSync,
  ReopenContainerLog: reopenContainerLog,
  ContainerStats: containerStats,
  ListContainerStats: listContainerStats,
  PodSandboxStats: podSandboxStats,
  ListPodSandboxStats: listPodSandboxStats,
  GetContainerEvents: getContainerEvents,
};

export const imageHandlers: ImageHandlerTable = {
  PullImage: pullImage,
  ImageStatus: imageStatus,
  ListImages: listImages,
  RemoveImage: removeImage,
  ImageFsInfo: imageFsInfo,
};
