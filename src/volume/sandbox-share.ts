import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-file.js';
import { GUEST_SHARED_DIR } from '../agent-protocol/guest-paths.js';
import { logger } from '../log.js';
import { CopyShare, type VolumeCopyAgent } from './copy-share.js';
import type { ShareMode } from './share-mode.js';
import { ShareDir, type ShareVolume } from './share-dir.js';
import type { WriteBackRefusal } from './write-back-refusals.js';
import { isVirtiofsdAlive, startVirtiofsd, stopVirtiofsd, virtiofsdAvailable, type VirtiofsdHandle } from './virtiofsd.js';

const log = logger('volume-share');

/** The virtio-fs tag every sandbox's guest mounts (fixed: the guest never chooses it). */
export const SHARE_TAG = 'podvisor-share';

export { SHARE_MODES, type ShareMode } from './share-mode.js';

/**
 * What a sandbox record keeps about its share, so a restarted podvisord can
 * find, use and remove it. Records from before share modes have no `mode`
 * field set to anything but 'virtiofs'.
 */
export type SandboxShareState =
  | { mode: 'virtiofs'; dir: string; helper: VirtiofsdHandle }
  | { mode: 'copy'; dir: string };

/**
 * One sandbox's volume share, whatever its mode. The launcher picks the mode
 * (`create(dir, mode)`); everything after that reads the same:
 *
 *   const share = await SandboxShare.create(dir, 'copy');
 *   Vm.launch({ ..., ...(share.launchOption ? { sharedFs: share.launchOption } : {}) });
 *   agent.setupSandbox({ ..., sharedFsTag: share.guestTag });   // undefined in copy mode
 *   share.attachAgent(agent);                                    // copy mode starts syncing
 *   const [guestSource] = await share.addVolumes(containerId, [{ index, vol }]);
 *
 * A volume goes in as (container, index, host source) and comes back as the
 * guest path to bind; removal is per container and per sandbox.
 */
export class SandboxShare {
  private constructor(
    readonly state: SandboxShareState,
    private readonly dirShare?: ShareDir,
    private readonly copies?: CopyShare,
  ) {}

  /** Whether this host can give sandboxes a share in `mode`. */
  static available(mode: ShareMode = 'virtiofs'): boolean {
    return mode === 'copy' || virtiofsdAvailable();
  }

  /** Makes the share (for virtiofs: the directory and its helper); undoes what it made on failure. */
  static async create(dir: string, mode: ShareMode = 'virtiofs'): Promise<SandboxShare> {
    if (mode === 'copy') return new SandboxShare({ mode, dir }, undefined, await CopyShare.create(dir));
    const share = await ShareDir.create(dir);
    try {
      const helper = await startVirtiofsd({ socket: socketPath(dir), source: share.paths.shared, logFile: join(dir, 'virtiofsd.log') });
      const state: SandboxShareState = { mode: 'virtiofs', dir, helper };
      // Beside the share, so a podvisord that dies before the sandbox record exists can still find the helper.
      await writeFileAtomic(join(dir, HELPER_FILE), JSON.stringify(state)).catch(async (e) => {
        await stopVirtiofsd(helper);
        throw e;
      });
      return new SandboxShare(state, share);
    } catch (e) {
      await share.destroy().catch(() => undefined);
      throw e;
    }
  }

  /** The share of a sandbox an earlier podvisord made. */
  static open(state: SandboxShareState): SandboxShare {
    if (state.mode === 'copy') return new SandboxShare(state, undefined, CopyShare.open(state.dir));
    return new SandboxShare({ ...state, mode: 'virtiofs' }, ShareDir.open(state.dir));
  }

  /** Removes a share found without a sandbox record (a crash during RunPodSandbox); a missing one is fine. */
  static async removeLeftover(dir: string): Promise<void> {
    if (!existsSync(dir)) return;
    const state = await readFile(join(dir, HELPER_FILE), 'utf8').then((t) => JSON.parse(t) as { helper?: VirtiofsdHandle }).catch(() => undefined);
    if (state?.helper) await stopVirtiofsd(state.helper);
    await ShareDir.open(dir).destroy();
  }

  get mode(): ShareMode {
    return this.state.mode;
  }

  /** The QEMU launch option that connects the VM to the helper; undefined when the mode needs no device. */
  get launchOption(): { socket: string; tag: string } | undefined {
    return this.state.mode === 'virtiofs' ? { socket: socketPath(this.state.dir), tag: SHARE_TAG } : undefined;
  }

  /** The tag the agent mounts at boot (SetupSandbox shared_fs_tag); undefined when there is nothing to mount. */
  get guestTag(): string | undefined {
    return this.state.mode === 'virtiofs' ? SHARE_TAG : undefined;
  }

  /** Whether the share's host helper runs (a mode without one always answers true). */
  get helperAlive(): boolean {
    return this.state.mode === 'virtiofs' ? isVirtiofsdAlive(this.state.helper) : true;
  }

  /** Copy mode syncs through the sandbox's agent from now on; virtiofs needs nothing. */
  attachAgent(agent: VolumeCopyAgent): void {
    this.copies?.attachAgent(agent);
  }

  /**
   * What copy mode's write-back refused of the guest's answers lately (all of the sandbox's, or those of
   * one container's volumes and of the long poll); undefined in a mode without write-back.
   */
  writeBackRefusals(containerId?: string): { total: number; recent: WriteBackRefusal[] } | undefined {
    return this.copies ? { total: this.copies.refusals.total, recent: this.copies.refusals.recent(containerId) } : undefined;
  }

  /** The agent is gone: stop syncing (copy mode). */
  detachAgent(): void {
    this.copies?.detachAgent();
  }

  /**
   * Adds a container's host volumes (its CRI mounts at these indexes); returns,
   * in the same order, the guest paths its bind mounts take as sources. On
   * failure none of them is left.
   */
  async addVolumes(containerId: string, vols: Array<{ index: number; vol: ShareVolume }>): Promise<string[]> {
    if (this.copies) {
      const out: string[] = [];
      try {
        for (const { vol } of vols) out.push(await this.copies.addVolume(containerId, vol));
      } catch (e) {
        await this.copies.removeContainer(containerId).catch(() => undefined);
        throw e;
      }
      return out;
    }
    return (await this.dirShare!.addVolumes(containerId, vols)).map((relative) => `${GUEST_SHARED_DIR}/${relative}`);
  }

  removeContainer(containerId: string): Promise<void> {
    return this.copies ? this.copies.removeContainer(containerId) : this.dirShare!.removeContainer(containerId);
  }

  /**
   * The host sees every write the guest made to the container's writable
   * volumes once this resolves (a container exited; kubelet reads its
   * termination log next). Immediate for virtiofs.
   */
  async flush(containerId: string): Promise<void> {
    await this.copies?.flush(containerId);
  }

  /** Stops the helper (or the syncing) and removes every mount and file; idempotent. */
  async destroy(): Promise<void> {
    if (this.state.mode === 'virtiofs') await stopVirtiofsd(this.state.helper);
    if (this.copies) await this.copies.destroy();
    else await this.dirShare!.destroy();
    log.debug({ dir: this.state.dir }, 'share removed');
  }
}

const HELPER_FILE = 'helper.json';

function socketPath(dir: string): string {
  return join(dir, 's', 'fs.sock');
}
