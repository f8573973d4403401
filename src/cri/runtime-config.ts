import type { RuntimeRpc } from './rpc.js';

/** Containers run in the guest's own cgroup tree, managed directly (cgroupfs), never by the host's systemd. */
export const runtimeConfig: RuntimeRpc<'RuntimeConfig'> = async () => ({ linux: { cgroup_driver: 'CGROUPFS' } });
