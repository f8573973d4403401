import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageService } from '../../src/image/image-service.js';
import { killLeftoverVms, removeDaemonDir, startDaemon, unary, type DaemonOptions, type RunningDaemon } from './daemon.js';
import { cleanupOnSignal } from './signal-cleanup.js';
import { libvirtUnavailable, startPrivateLibvirtd, type PrivateLibvirtd } from './libvirtd.js';
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
  /** The test's own libvirtd, when the pods run on the libvirt VM backend (`vmBackend: 'libvirt'`). */
  libvirtd?: PrivateLibvirtd;
}

/**
 * Which VM backend the pod tests run on: `PODVISOR_TEST_VM_BACKEND=libvirt` runs the same
 * pod tests (lifecycle, recovery, …) with both default handlers on the libvirt backend,
 * against a libvirtd the env starts for itself.
 */
export function testVmBackend(): 'qemu' | 'libvirt' {
  const b = process.env.PODVISOR_TEST_VM_BACKEND ?? 'qemu';
  if (b !== 'qemu' && b !== 'libvirt') throw new Error(`PODVISOR_TEST_VM_BACKEND must be "qemu" or "libvirt", got "${b}"`);
  return b;
}

/** The config that puts both default handlers on the libvirt backend behind `uri`. */
export function libvirtBackendConfig(uri: string): string {
  return `[runtimes.""]\nbackend = "libvirt"\n[runtimes.kata]\nbackend = "libvirt"\n[libvirt]\nuri = "${uri}"\n`;
}

export function daemonConfig(registryHost: string): string {
  return `[registry]\ninsecure = ["${registryHost}"]\n`;
}

/** `extraConfig`: TOML appended to the registry settings (e.g. a `[cni]` table). */
export async function startPodTestEnv(opts: DaemonOptions & { vmBackend?: 'qemu' | 'libvirt' } = {}, extraConfig = ''): Promise<PodTestEnv> {
  const backend = opts.vmBackend ?? testVmBackend();
  const unavailable = backend === 'libvirt' ? await libvirtUnavailable() : undefined;
  if (unavailable) throw new Error(`the pod tests were asked to run on the libvirt backend, but ${unavailable}`);
  const libvirtd = backend === 'libvirt' ? await startPrivateLibvirtd() : undefined;
  const registry = await startRegistry().catch(async (e) => {
    await libvirtd?.stop();
    throw e;
  });
  let dir: string | undefined;
  try {
    await pushTestImages(registry);
    dir = mkdtempSync(join(tmpdir(), 'pvp-'));
    const config = daemonConfig(registry.host) + extraConfig + (libvirtd ? libvirtBackendConfig(libvirtd.uri) : '');
    // With libvirt podvisord also connects to libvirtd before it serves: more time on a loaded machine.
    const daemonOpts: DaemonOptions = { config, logLevel: 'info', ...(libvirtd ? { startTimeoutMs: 120_000 } : {}), ...opts, dir };
    const env: PodTestEnv = {
      registry,
      dir,
      ...(libvirtd ? { libvirtd } : {}),
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
        await libvirtd?.stop();
        await registry.stop();
        removeDaemonDir(dir!);
      },
    };
    // Interrupted: no CRI calls (the daemon may be the thing that hangs), just kill what this env made.
    const forget = cleanupOnSignal(async () => {
      await env.daemon.stop('SIGKILL');
      killLeftoverVms(join(dir!, 'state', 'vms'));
      removeDaemonDir(dir!);
    });
    const dispose = env.dispose;
    env.dispose = async () => {
      forget();
      await dispose();
    };
    return env;
  } catch (e) {
    await registry.stop();
    await libvirtd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
