import type { PodvisorConfig } from '../config/config.js';
import type { RuntimeInfo } from '../runtime/runtime-info.js';
import type { ImageService } from '../image/image-service.js';
import type { PodServices } from '../pod/pod-services.js';
import type { StreamingServer } from '../streaming/server.js';

/**
 * The domain services CRI handlers call. Handlers get this object and nothing
 * else: they never reach QEMU, the agent or a registry themselves.
 * Each feature adds its service here when it lands.
 */
export interface CriServices {
  config: PodvisorConfig;
  runtime: RuntimeInfo;
  /** The node's images (pull, status, erofs disks). */
  images: ImageService;
  /** Pod sandboxes and their containers. */
  pods: PodServices;
  /** Exec/Attach/PortForward: prepares a session and hands out its one-time URL. */
  streaming: StreamingServer;
  /** Aborted when the daemon shuts down, so long-lived streams can end. */
  shutdown: AbortSignal;
}
