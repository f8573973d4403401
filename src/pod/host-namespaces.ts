import { invalidArgument } from '../errors.js';
import type { NamespaceOptions } from './records.js';

/**
 * A pod here is a VM with its own kernel: there is no way for it to join the
 * host's network, PID or IPC namespace. kubelet sends NODE for hostNetwork,
 * hostPID and hostIPC; refuse it with a reason instead of pretending.
 */
export function rejectHostNamespaces(ns: NamespaceOptions, subject: string): void {
  const asked: string[] = [];
  if (ns.network === 'NODE') asked.push('network (hostNetwork)');
  if (ns.pid === 'NODE') asked.push('PID (hostPID)');
  if (ns.ipc === 'NODE') asked.push('IPC (hostIPC)');
  if (asked.length > 0) {
    throw invalidArgument(`${subject} asks for the host's ${asked.join(', ')} namespace: podvisor runs every pod in its own VM, ` +
      'which cannot share the host\'s namespaces; run this pod with a runtime that shares the host kernel (e.g. runc)');
  }
}
