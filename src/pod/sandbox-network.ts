import type { SandboxNetwork } from '../network/sandbox-networks.js';
import type { PodNetworkRequest } from '../network/pod-runtime-config.js';
import type { GuestNic } from './guest-agent.js';
import type { SandboxConfig } from './records.js';

/** The network module's view of a sandbox's config. */
export function networkRequest(sandboxId: string, config: SandboxConfig): PodNetworkRequest {
  const m = config.metadata;
  return {
    sandboxId, name: m.name, namespace: m.namespace, uid: m.uid,
    portMappings: config.portMappings, annotations: config.annotations,
    ...(config.dnsConfig ? { dns: config.dnsConfig } : {}),
  };
}

/**
 * What the guest NIC gets from the CNI result. A route without a gateway is
 * sent via the gateway of its address family (spec: "a default gateway is
 * assumed, as determined by the plugin"; bridge uses its own gateway).
 */
export function guestNic(net: SandboxNetwork): GuestNic {
  const { addresses, routes, mac } = net.attachment;
  const gatewayOf = (dst: string) => addresses.find((a) => (a.family === 6) === dst.includes(':') && a.gateway)?.gateway;
  return {
    mac: net.tap.mac,
    newMac: mac,
    mtu: net.mtu,
    addresses: addresses.map((a) => ({ cidr: a.cidr })),
    routes: routes.map((r) => {
      const gateway = r.gateway ?? gatewayOf(r.destination);
      return { destination: r.destination, ...(gateway ? { gateway } : {}) };
    }),
  };
}
