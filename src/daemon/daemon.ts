import { rmSync } from 'node:fs';
import type { PodvisorConfig } from '../config/config.js';
import { startCriServer } from '../cri/server.js';
import type { CriServices } from '../cri/services.js';
import { RuntimeInfo } from './runtime-info.js';

export interface Daemon {
  services: CriServices;
  /** Stops serving and releases the socket. Sandbox VMs are left running on purpose. */
  stop(): Promise<void>;
}

/** Builds the domain services and serves them over the CRI socket. */
export async function startDaemon(config: PodvisorConfig): Promise<Daemon> {
  const shutdown = new AbortController();
  const services: CriServices = {
    config,
    runtime: new RuntimeInfo(config),
    shutdown: shutdown.signal,
  };
  const server = await startCriServer(services, config.listen);
  return {
    services,
    async stop() {
      shutdown.abort(); // lets event streams end so in-flight calls can drain
      await server.close();
      rmSync(config.listen, { force: true });
    },
  };
}
