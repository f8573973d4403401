import type { PassthroughConfig } from '../../config/config.js';
import { invalidArgument } from '../../errors.js';
import { namespaceOptionsFromCri } from '../fields.js';
import type { PodSandboxConfig__Output } from '../generated/runtime/v1/PodSandboxConfig.js';

/**
 * Where a new pod runs: in a VM (podvisor itself) or in the pass-through
 * runtime. Only the operator's `[passthrough]` rules send a pod out of its
 * VM; nothing a pod asks for does so by itself.
 *
 * - a handler listed in `handlers` goes to the pass-through runtime by name;
 * - with `host_namespaces = true`, a pod asking for the host's network, PID
 *   or IPC namespace goes there when it names no RuntimeClass (handler "");
 * - a pod naming a VM handler (e.g. `kata`) and host namespaces is refused:
 *   its RuntimeClass asked for VM isolation, which must never be silently
 *   dropped. Listing the handler in `handlers` is how an operator says otherwise;
 * - everything else is podvisor's, which refuses host namespaces with its own message.
 */
export type Destination = 'vm' | 'passthrough';

export function sandboxDestination(
  rules: PassthroughConfig,
  vmHandlers: readonly string[],
  config: PodSandboxConfig__Output | null | undefined,
  handler: string,
): Destination {
  if (rules.endpoint === '') return 'vm';
  if (rules.handlers.includes(handler)) return 'passthrough';
  const asked = hostNamespacesAsked(config);
  if (!rules.hostNamespaces || asked.length === 0) return 'vm';
  if (handler === '') return 'passthrough';
  if (vmHandlers.includes(handler)) {
    const m = config?.metadata;
    throw invalidArgument(
      `pod "${m?.namespace ?? ''}/${m?.name ?? ''}" asks for the host's ${asked.join(', ')} namespace with runtime handler "${handler}", ` +
      `which runs pods in VMs that cannot share the host's namespaces; [passthrough] host_namespaces sends only pods without a ` +
      `RuntimeClass to ${rules.endpoint}. Drop the RuntimeClass, or list "${handler}" in [passthrough] handlers to run every ` +
      `"${handler}" pod there without a VM`,
    );
  }
  return 'vm'; // an unknown handler: podvisor's own answer names it
}

/** Which host namespaces a sandbox config asks for, as words for messages. */
export function hostNamespacesAsked(config: PodSandboxConfig__Output | null | undefined): string[] {
  const ns = namespaceOptionsFromCri(config?.linux?.security_context?.namespace_options);
  const asked: string[] = [];
  if (ns.network === 'NODE') asked.push('network (hostNetwork)');
  if (ns.pid === 'NODE') asked.push('PID (hostPID)');
  if (ns.ipc === 'NODE') asked.push('IPC (hostIPC)');
  return asked;
}

/** An image request names a handler that the rules send to the pass-through runtime (ImageSpec.runtime_handler). */
export function imageHandlerIsPassthrough(rules: PassthroughConfig, handler: string | undefined): boolean {
  return rules.endpoint !== '' && handler !== undefined && handler !== '' && rules.handlers.includes(handler);
}
