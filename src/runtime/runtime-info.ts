import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { PodvisorConfig } from '../config/config.js';
import { invalidArgument } from '../errors.js';
import type { SandboxNetworks } from '../network/sandbox-networks.js';
import { readJsonFile, writeJsonAtomicSync } from '../util/atomic-file.js';
import { hostAcceleration, type Acceleration } from '../vm/host.js';

export interface Condition {
  type: 'RuntimeReady' | 'NetworkReady';
  status: boolean;
  reason: string;
  message: string;
}

/**
 * What the runtime as a whole reports about itself: identity, readiness and
 * the node-level settings kubelet pushes (the pod CIDR).
 */
export class RuntimeInfo {
  private podCidr = '';
  private readonly cidrFile: string;

  constructor(private readonly config: PodvisorConfig, private readonly network?: SandboxNetworks) {
    this.cidrFile = join(config.state, 'runtime-config.json');
    try {
      this.podCidr = readJsonFile<{ podCidr?: string }>(this.cidrFile)?.podCidr ?? '';
    } catch {
      this.podCidr = ''; // unreadable: kubelet sends the CIDR again on its next sync
    }
  }

  get handlers(): string[] {
    return Object.keys(this.config.runtimes).sort();
  }

  get currentPodCidr(): string {
    return this.podCidr;
  }

  /** Which accelerator sandbox VMs get on this host, and why (KVM or TCG). */
  accelerator(): Acceleration {
    return hostAcceleration();
  }

  /**
   * RuntimeReady is true only when a sandbox could actually boot: QEMU is on
   * PATH and every handler's kernel, initrd and system disk exist.
   */
  conditions(): Condition[] {
    return [this.runtimeReady(), this.networkReady()];
  }

  private runtimeReady(): Condition {
    if (!onPath('qemu-system-x86_64')) {
      return { type: 'RuntimeReady', status: false, reason: 'QemuMissing', message: 'qemu-system-x86_64 is not on PATH; run hack/install-deps' };
    }
    for (const [handler, p] of Object.entries(this.config.runtimes)) {
      const missing = [p.kernel, p.initrd, p.systemDisk].filter((f) => !existsSync(f));
      if (missing.length > 0) {
        return {
          type: 'RuntimeReady',
          status: false,
          reason: 'GuestImageMissing',
          message: `runtime handler "${handler}" lacks ${missing.join(', ')}; run hack/build-guest-image`,
        };
      }
    }
    return { type: 'RuntimeReady', status: true, reason: '', message: '' };
  }

  /** True only while `[cni] conf_dir` holds a usable network config (read again on every call). */
  private networkReady(): Condition {
    const state = this.network?.state();
    if (!state) return { type: 'NetworkReady', status: false, reason: 'NetworkNotConfigured', message: 'podvisord runs without pod networking' };
    if (state.ready) return { type: 'NetworkReady', status: true, reason: '', message: '' };
    return { type: 'NetworkReady', status: false, reason: state.reason, message: state.message };
  }

  /** Keeps the CIDR kubelet assigns to this node; an empty one leaves it unchanged. */
  updatePodCidr(cidr: string): void {
    if (cidr === '') return;
    if (!isCidr(cidr)) throw invalidArgument(`pod_cidr "${cidr}" is not a CIDR such as 10.88.0.0/16 or fd00::/64`);
    writeJsonAtomicSync(this.cidrFile, { podCidr: cidr });
    this.podCidr = cidr;
  }
}

export function isCidr(s: string): boolean {
  const [addr, bits, extra] = s.split('/');
  if (extra !== undefined || addr === undefined || bits === undefined || !/^\d{1,3}$/.test(bits)) return false;
  const prefix = Number(bits);
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(addr)) return prefix <= 32 && addr.split('.').every((o) => Number(o) <= 255);
  return addr.includes(':') && /^[0-9a-fA-F:]+$/.test(addr) && prefix <= 128;
}

function onPath(bin: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, bin), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}
