import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageService } from '../../src/image/image-service.js';
import { killLeftoverVms, startDaemon, unary, type DaemonOptions, type RunningDaemon } from './daemon.js';
import { cleanupOnSignal } from './signal-cleanup.js';
import { pushTestImages, startRegistry, type TestRegistry } from './registry.js';

/**
 * A real podvisord on a temp socket, with a real registry holding the test
 * images, for the pod end-to-end tests. The daemon can be killed and started
 * again on the same folders (restart tests).
 */
export interface PodTestEnv {
  registry: TestRegistry;
  dir: string;
  daemon: RunningDaemon;
  /** `127.0.0.1:PORT/podvisor-test/busybox:latest` */
  busybox: string;
  /** Pulls an image into the daemon's store. */
  pull(ref: string): Promise<string>;
  /** SIGKILLs podvisord; its VMs keep running. */
  killDaemon(): Promise<void>;
  /** Starts podvisord again on the same folders. */
  startDaemon(): Promise<void>;
  dispose(): Promise<void>;
}

export function daemonConfig(registryHost: string): string {
  return `[registry]\ninsecure = ["${registryHost}"]\n`;
}

/** `extraConfig`: TOML appended to the registry settings (e.g. a `[cni]` table). */
export async function startPodTestEnv(opts: DaemonOptions = {}, extraConfig = ''): Promise<PodTestEnv> {
  const registry = await startRegistry();
  let dir: string | undefined;
  try {
    await pushTestImages(registry);
    dir = mkdtempSync(join(tmpdir(), 'pvp-'));
    const daemonOpts: DaemonOptions = { config: daemonConfig(registry.host) + extraConfig, logLevel: 'info', ...opts, dir };
    const env: PodTestEnv = {
      registry,
      dir,
      daemon: await startDaemon(daemonOpts),
      busybox: `${registry.host}/podvisor-test/busybox:latest`,
      async pull(ref) {
        try {
          const res = await unary(env.daemon.client.image, 'PullImage', { image: { image: ref } });
          return res.image_ref;
        } catch (e) {
          if ((e as { code?: number }).code !== 12) throw e; // UNIMPLEMENTED: pull with the store directly
          const images = new ImageService({ root: env.daemon.root, registry: { mirrors: {}, insecure: [registry.host] } });
          await images.init();
          return images.pull(ref);
        }
      },
      async killDaemon() {
        env.daemon.client.close();
        await env.daemon.stop('SIGKILL');
      },
      async startDaemon() {
        env.daemon = await startDaemon(daemonOpts);
      },
      async dispose() {
        // Pods outlive podvisord on purpose, so remove them through the CRI first, then make sure no VM is left.
        try {
          const { items } = await unary(env.daemon.client.runtime, 'ListPodSandbox', {});
          for (const s of items) await unary(env.daemon.client.runtime, 'RemovePodSandbox', { pod_sandbox_id: s.id });
        } catch {
          /* the daemon may be gone; the pidfiles below catch what is left */
        }
        await env.daemon.dispose();
        killLeftoverVms(join(dir!, 'state', 'vms'));
        await registry.stop();
        rmSync(dir!, { recursive: true, force: true });
      },
    };
    // Interrupted: no CRI calls (the daemon may be the thing that hangs), just kill what this env made.
    const forget = cleanupOnSignal(async () => {
      await env.daemon.stop('SIGKILL');
      killLeftoverVms(join(dir!, 'state', 'vms'));
      rmSync(dir!, { recursive: true, force: true });
    });
    const dispose = env.dispose;
    env.dispose = async () => {
      forget();
      await dispose();
    };
    return env;
  } catch (e) {
    await registry.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
