import { newId } from '../../src/pod/ids.js';
import { nowNanos } from '../../src/pod/clock.js';
import type { ContainerConfig, ContainerRecord, SandboxConfig, SandboxRecord } from '../../src/pod/records.js';

/** Plain records for unit tests of the pod module's logic (no VM involved). */
export function sandboxConfig(over: Partial<SandboxConfig> = {}): SandboxConfig {
  return {
    metadata: { name: 'web', namespace: 'default', uid: 'uid-1', attempt: 0 },
    hostname: 'web',
    logDirectory: '/var/log/pods/default_web_uid-1',
    portMappings: [],
    labels: { app: 'web' },
    annotations: {},
    cgroupParent: '',
    sysctls: {},
    namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD', targetId: '' },
    privileged: false,
    readonlyRootfs: false,
    supplementalGroups: [],
    ...over,
  };
}

export function sampleSandbox(over: Partial<SandboxRecord> = {}): SandboxRecord {
  return {
    id: newId(),
    config: sandboxConfig(),
    runtimeHandler: '',
    state: 'ready',
    createdAt: nowNanos(),
    network: { mode: 'loopback', ips: [] },
    images: [],
    guestFiles: {},
    ...over,
  };
}

export function containerConfig(over: Partial<ContainerConfig> = {}): ContainerConfig {
  return {
    metadata: { name: 'app', attempt: 0 },
    image: 'busybox:latest',
    command: [],
    args: [],
    workingDir: '',
    envs: [],
    mounts: [],
    devices: [],
    labels: {},
    annotations: {},
    logPath: 'app/0.log',
    stdin: false,
    stdinOnce: false,
    tty: false,
    security: {
      privileged: false,
      readonlyRootfs: false,
      runAsUsername: '',
      supplementalGroups: [],
      addCapabilities: [],
      dropCapabilities: [],
      noNewPrivs: false,
      namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD', targetId: '' },
    },
    ...over,
  };
}

export function sampleContainer(sandboxId: string, name: string, over: Partial<ContainerRecord> = {}): ContainerRecord {
  return {
    id: newId(),
    sandboxId,
    config: containerConfig({ metadata: { name, attempt: 0 }, labels: { name } }),
    state: 'created',
    createdAt: nowNanos(),
    imageId: 'sha256:' + 'a'.repeat(64),
    imageRef: 'docker.io/library/busybox@sha256:' + 'b'.repeat(64),
    logFile: '',
    stopSignal: 15,
    ...over,
  };
}
