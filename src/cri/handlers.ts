import type { ImageHandlerTable, RuntimeHandlerTable } from './rpc.js';
import { version } from './version.js';
import { status } from './status.js';
import { runtimeConfig } from './runtime-config.js';
import { updateRuntimeConfig } from './runtime-config-update.js';

/**
 * Which RPCs podvisor serves. An RPC missing here answers UNIMPLEMENTED with
 * its name, so kubelet and operators see exactly what is not there yet.
 */
export const runtimeHandlers: RuntimeHandlerTable = {
  Version: version,
  Status: status,
  RuntimeConfig: runtimeConfig,
  UpdateRuntimeConfig: updateRuntimeConfig,
};

export const imageHandlers: ImageHandlerTable = {};
