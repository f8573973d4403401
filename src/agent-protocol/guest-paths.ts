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

/** Where the host asks the agent to mount each image disk (under the guest's private /run). */
export const GUEST_IMAGES_DIR = '/run/podvisor/images';

/** Per-container folders: the rootfs overlay is `<GUEST_CONTAINERS_DIR>/<id>/rootfs`. */
export const GUEST_CONTAINERS_DIR = '/run/podvisor/containers';

/**
 * Where the agent mounts the sandbox's virtio-fs share (SetupSandbox
 * shared_fs_tag); CRI mount sources are `<this>/<container>/<n>` below it.
 */
export const GUEST_SHARED_DIR = '/run/podvisor/shared';

/** The container id that names the guest itself: debug shells run there, outside every container. */
export const GUEST_SHELL_CONTAINER_ID = '';

/** Copied volumes (share mode "copy"): `<this>/<volume id>`, a directory or a single file. */
export const GUEST_VOLUMES_DIR = '/run/podvisor/volumes';
