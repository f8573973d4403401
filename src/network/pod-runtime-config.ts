import { invalidArgument } from '../errors.js';

/**
 * What a pod asks of the network, in the network module's own words, and how
 * it becomes CNI_ARGS and the capability arguments (runtimeConfig) that
 * kubelet-era runtimes pass: portMappings, dns, ipRanges, bandwidth.
 */

export interface PodNetworkRequest {
  sandboxId: string;
  name: string;
  namespace: string;
  uid: string;
  portMappings: Array<{ protocol: string; containerPort: number; hostPort: number; hostIp: string }>;
  dns?: { servers: string[]; searches: string[]; options: string[] };
  annotations: Record<string, string>;
}

/** The traffic shaping annotations kubelet's bandwidth support reads. */
export const INGRESS_BANDWIDTH = 'kubernetes.io/ingress-bandwidth';
export const EGRESS_BANDWIDTH = 'kubernetes.io/egress-bandwidth';
/** Burst when only a rate is given: as containerd and CRI-O, effectively "no burst limit". */
const UNLIMITED_BURST = 2_147_483_647;

export function cniArgs(req: PodNetworkRequest): string {
  const pairs: Array<[string, string]> = [
    ['IgnoreUnknown', '1'],
    ['K8S_POD_NAMESPACE', req.namespace],
    ['K8S_POD_NAME', req.name],
    ['K8S_POD_INFRA_CONTAINER_ID', req.sandboxId],
    ['K8S_POD_UID', req.uid],
  ];
  for (const [k, v] of pairs) {
    if (/[;=\0]/.test(v)) throw invalidArgument(`pod ${k} ${JSON.stringify(v)} cannot be passed to CNI (it holds ';' or '=')`);
  }
  return pairs.map(([k, v]) => `${k}=${v}`).join(';');
}

/** `podCidr`: the node's pod CIDR from UpdateRuntimeConfig ('' when kubelet sent none). */
export function runtimeConfigFor(req: PodNetworkRequest, podCidr: string): Record<string, unknown> {
  const rc: Record<string, unknown> = {};
  const ports = req.portMappings.filter((p) => p.hostPort > 0).map((p) => ({
    hostPort: p.hostPort,
    containerPort: p.containerPort,
    protocol: p.protocol.toLowerCase(),
    ...(p.hostIp ? { hostIP: p.hostIp } : {}),
  }));
  if (ports.length > 0) rc.portMappings = ports;
  if (req.dns && (req.dns.servers.length || req.dns.searches.length || req.dns.options.length)) {
    rc.dns = { servers: req.dns.servers, searches: req.dns.searches, options: req.dns.options };
  }
  if (podCidr) rc.ipRanges = [[{ subnet: podCidr }]];
  const bw = bandwidthOf(req.annotations);
  if (bw) rc.bandwidth = bw;
  return rc;
}

function bandwidthOf(annotations: Record<string, string>): Record<string, number> | undefined {
  const out: Record<string, number> = {};
  const ingress = annotations[INGRESS_BANDWIDTH];
  const egress = annotations[EGRESS_BANDWIDTH];
  if (ingress !== undefined) Object.assign(out, { ingressRate: bitsPerSecond(INGRESS_BANDWIDTH, ingress), ingressBurst: UNLIMITED_BURST });
  if (egress !== undefined) Object.assign(out, { egressRate: bitsPerSecond(EGRESS_BANDWIDTH, egress), egressBurst: UNLIMITED_BURST });
  return Object.keys(out).length > 0 ? out : undefined;
}

const SUFFIXES: Record<string, number> = {
  '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** A Kubernetes quantity ("10M", "1Gi", "500k") as bits per second; kubelet allows 1 kbit/s … 1 Pbit/s. */
export function bitsPerSecond(what: string, q: string): number {
  const m = /^(\d+(?:\.\d+)?)([kMGTPE]i?|)$/.exec(q.trim());
  const mult = m ? SUFFIXES[m[2]!] : undefined;
  if (!m || mult === undefined) throw invalidArgument(`annotation ${what}="${q}" is not a quantity such as 10M or 1Gi`);
  const v = Math.round(Number(m[1]) * mult);
  if (v < 1e3 || v > 1e15) throw invalidArgument(`annotation ${what}="${q}" is outside 1k..1P bits per second`);
  return v;
}
