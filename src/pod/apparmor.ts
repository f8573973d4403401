import { unimplemented } from '../errors.js';
import type { ContainerConfig } from './records.js';

/**
 * podvisor runs no AppArmor inside the pod VM: the VM is the isolation
 * boundary, and the guest kernel has no profiles to load. RuntimeDefault and
 * Unconfined therefore mean the same thing here and are accepted; a Localhost
 * profile asks for confinement podvisor cannot give, so it is refused rather
 * than silently ignored (containerd does the same on a host without AppArmor).
 */
export function rejectAppArmorProfile(config: ContainerConfig): void {
  const p = config.security.apparmor;
  if (p?.type !== 'Localhost') return;
  throw unimplemented(`container "${config.metadata.name}": AppArmor profile "${p.localhostRef}" cannot be applied: podvisor does not run ` +
    'AppArmor inside the pod VM (the VM is the isolation boundary); use the RuntimeDefault or Unconfined AppArmor profile');
}
