/**
 * Paths inside the guest that the host names in what it sends the agent, so
 * both sides read them from one place.
 */

/**
 * The pod's shared PID namespace (PID mode POD). The agent makes it on first
 * use, with a small reaper as its PID 1 (the role the pause container plays on
 * a host), and bind-mounts it here for OCI specs to join.
 */
export const GUEST_POD_PID_NAMESPACE = '/run/podvisor/pod-pid-ns';
