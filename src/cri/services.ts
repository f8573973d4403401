import type { PodvisorConfig } from '../config/config.js';
import type { RuntimeInfo } from '../daemon/runtime-info.js';

/**
 * The domain services CRI handlers call. Handlers get this object and nothing
 * else: they never reach QEMU, the agent or a registry themselves.
 * Each feature adds its service here when it lands.
 */
export interface CriServices {
  config: PodvisorConfig;
  runtime: RuntimeInfo;
  /** Aborted when the daemon shuts down, so long-lived streams can end. */
  shutdown: AbortSignal;
}
