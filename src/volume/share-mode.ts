/**
 * How CRI mounts reach a sandbox's guest:
 * - `virtiofs`: a per-sandbox shared directory (host bind mounts, see
 *   share-dir.ts) served by a confined virtiofsd over a vhost-user-fs device.
 *   Needs shared guest RAM and a device at VM launch (`launchOption`).
 * - `copy`: no device and no helper; the agent keeps copies in the guest and
 *   podvisord keeps them in step (copy-share.ts). For VM-template clones: their
 *   RAM is a private mapping of the template's, which virtiofsd cannot map, and
 *   QEMU 7.2 cannot migrate a vhost-user-fs device, so a template cannot carry one.
 */
export type ShareMode = 'virtiofs' | 'copy';
export const SHARE_MODES: readonly ShareMode[] = ['virtiofs', 'copy'];
