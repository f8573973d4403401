import type { PassthroughConfig } from '../../config/config.js';
import type { Image } from '../generated/runtime/v1/Image.js';
import type { Image__Output } from '../generated/runtime/v1/Image.js';
import type { RuntimeCondition } from '../generated/runtime/v1/RuntimeCondition.js';
import type { RuntimeHandler } from '../generated/runtime/v1/RuntimeHandler.js';
import type { StatusResponse, StatusResponse__Output } from '../generated/runtime/v1/StatusResponse.js';

/**
 * How the answers of podvisor and the pass-through runtime become one answer
 * for kubelet, for the RPCs that are about the node rather than one pod.
 */

/**
 * Status of both runtimes as one:
 * - RuntimeReady is podvisor's: VM pods keep being served when the other runtime is gone, and kubelet
 *   must not mark the whole node down for it;
 * - NetworkReady is true only when both are: each runtime sets up its own pods' networks, so a
 *   pass-through runtime without a CNI network cannot start the non-host-network pods the rules send it;
 * - PassthroughRuntimeReady and PassthroughNetworkReady say what the other runtime reported (or that it
 *   did not answer), for operators; kubelet ignores conditions it does not know;
 * - runtime_handlers: podvisor's VM handlers, then the pass-through handlers with the features the other
 *   runtime reports for them (none when it reports nothing, as containerd 1.6 does).
 */
export function mergeStatus(
  local: StatusResponse,
  remote: StatusResponse__Output | Error,
  rules: PassthroughConfig,
): StatusResponse {
  const conditions = [...(local.status?.conditions ?? [])];
  const extra: RuntimeCondition[] = [];
  if (remote instanceof Error) {
    const message = remote.message;
    extra.push({ type: 'PassthroughRuntimeReady', status: false, reason: 'PassthroughUnavailable', message });
    extra.push({ type: 'PassthroughNetworkReady', status: false, reason: 'PassthroughUnavailable', message });
  } else {
    const theirs = (type: string) => remote.status?.conditions.find((c) => c.type === type);
    for (const [type, ours] of [['RuntimeReady', 'PassthroughRuntimeReady'], ['NetworkReady', 'PassthroughNetworkReady']] as const) {
      const c = theirs(type);
      extra.push(c
        ? { type: ours, status: c.status, reason: c.reason, message: c.message ? `${rules.endpoint}: ${c.message}` : '' }
        : { type: ours, status: false, reason: 'PassthroughNoCondition', message: `${rules.endpoint} reported no ${type} condition` });
    }
    const net = theirs('NetworkReady');
    const i = conditions.findIndex((c) => c.type === 'NetworkReady');
    if (i >= 0 && conditions[i]!.status && !(net?.status ?? false)) {
      conditions[i] = {
        type: 'NetworkReady', status: false, reason: 'PassthroughNetworkNotReady',
        message: `the pass-through runtime at ${rules.endpoint} has no pod network: ${net?.message || net?.reason || 'no NetworkReady condition'}`,
      };
    }
  }
  const remoteHandlers = remote instanceof Error ? [] : remote.runtime_handlers;
  const passHandlers: RuntimeHandler[] = rules.handlers.map((name) => {
    const r = remoteHandlers.find((h) => h.name === name);
    return { name, features: r?.features ?? { recursive_read_only_mounts: false, user_namespaces: false } };
  });
  const vmHandlers = (local.runtime_handlers ?? []).filter((h) => !rules.handlers.includes(h.name ?? ''));
  return {
    ...local,
    status: { conditions: [...conditions, ...extra] },
    runtime_handlers: [...vmHandlers, ...passHandlers],
  };
}

/**
 * Images of both stores without showing one twice: an image id is its config
 * digest in both runtimes, so the same image pulled into both is one entry
 * whose tags and digests are the union.
 */
export function mergeImages(local: Image[], remote: Image__Output[]): Image[] {
  const byId = new Map<string, Image>();
  for (const img of [...local, ...remote]) {
    const id = img.id ?? '';
    const seen = byId.get(id);
    if (!seen) {
      byId.set(id, { ...img, repo_tags: [...(img.repo_tags ?? [])], repo_digests: [...(img.repo_digests ?? [])] });
      continue;
    }
    seen.repo_tags = union(seen.repo_tags ?? [], img.repo_tags ?? []);
    seen.repo_digests = union(seen.repo_digests ?? [], img.repo_digests ?? []);
    seen.pinned = Boolean(seen.pinned) || Boolean(img.pinned);
  }
  return [...byId.values()];
}

function union(a: string[], b: string[]): string[] {
  return [...new Set([...a, ...b])];
}
