import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-file.js';
import { logger } from '../log.js';
import { ShareDir, type ShareVolume } from './share-dir.js';
import { isVirtiofsdAlive, startVirtiofsd, stopVirtiofsd, virtiofsdAvailable, type VirtiofsdHandle } from './virtiofsd.js';

const log = logger('volume-share');

/** The virtio-fs tag every sandbox's guest mounts (fixed: the guest never chooses it). */
export const SHARE_TAG = 'podvisor-share';

/**
 * What a sandbox record keeps about its share, so a restarted podvisord can
 * find, use and remove it.
 */
export interface SandboxShareState {
  mode: 'virtiofs';
  dir: string;
  helper: VirtiofsdHandle;
}

/**
 * How CRI mounts reach one sandbox's guest. Today one mode, `virtiofs`: a
 * per-sandbox shared directory served by a confined virtiofsd. The interface
 * is the one a copy-in mode (for VM-template clones, whose private RAM mapping
 * virtiofsd cannot share) would implement too: a volume goes in as
 * (container, index, host source) and comes back as a guest path; removal is
 * per container and per sandbox.
 */
export class SandboxShare {
  private constructor(private readonly share: ShareDir, readonly state: SandboxShareState) {}

  /** Whether this host can give sandboxes a share at all. */
  static available(): boolean {
    return virtiofsdAvailable();
  }

  /** Makes the directory and starts its helper; undoes both on failure. */
  static async create(dir: string): Promise<SandboxShare> {
    const share = await ShareDir.create(dir);
    try {
      const helper = await startVirtiofsd({ socket: socketPath(dir), source: share.paths.shared, logFile: join(dir, 'virtiofsd.log') });
      const state: SandboxShareState = { mode: 'virtiofs', dir, helper };
      // Beside the share, so a podvisord that dies before the sandbox record exists can still find the helper.
      await writeFileAtomic(join(dir, HELPER_FILE), JSON.stringify(state)).catch(async (e) => {
        await stopVirtiofsd(helper);
        throw e;
      });
      return new SandboxShare(share, state);
    } catch (e) {
      await share.destroy().catch(() => undefined);
      throw e;
    }
  }

  /** The share of a sandbox an earlier podvisord made. */
  static open(state: SandboxShareState): SandboxShare {
    return new SandboxShare(ShareDir.open(state.dir), state);
  }

  /** Removes a share found without a sandbox record (a crash during RunPodSandbox); a missing one is fine. */
  static async removeLeftover(dir: string): Promise<void> {
    if (!existsSync(dir)) return;
    const state = await readFile(join(dir, HELPER_FILE), 'utf8').then((t) => JSON.parse(t) as SandboxShareState).catch(() => undefined);
    if (state?.helper) await stopVirtiofsd(state.helper);
    await ShareDir.open(dir).destroy();
  }

  /** The QEMU launch option that connects the VM to the helper. */
  get launchOption(): { socket: string; tag: string } {
    return { socket: socketPath(this.state.dir), tag: SHARE_TAG };
  }

  get helperAlive(): boolean {
    return isVirtiofsdAlive(this.state.helper);
  }

  /** Adds one volume; returns its path relative to the guest's share mount. */
  addVolume(containerId: string, index: number, vol: ShareVolume): Promise<string> {
    return this.share.addVolume(containerId, index, vol);
  }

  removeContainer(containerId: string): Promise<void> {
    return this.share.removeContainer(containerId);
  }

  /** Stops the helper and removes every mount and file; idempotent. */
  async destroy(): Promise<void> {
    await stopVirtiofsd(this.state.helper);
    await this.share.destroy();
    log.debug({ dir: this.state.dir }, 'share removed');
  }
}

const HELPER_FILE = 'helper.json';

function socketPath(dir: string): string {
  return join(dir, 's', 'fs.sock');
}
