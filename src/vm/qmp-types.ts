/**
 * The part of the QMP schema podvisor uses (QEMU 7.2 names). Each command maps its
 * arguments to its return value, so `qmp.execute('query-status')` is typed end to end.
 */

export type RunState =
  | 'debug' | 'finish-migrate' | 'inmigrate' | 'internal-error' | 'io-error' | 'paused'
  | 'postmigrate' | 'prelaunch' | 'restore-vm' | 'running' | 'save-vm' | 'shutdown'
  | 'suspended' | 'watchdog' | 'guest-panicked' | 'colo';

export interface StatusInfo { running: boolean; singlestep?: boolean; status: RunState }

export type BlockdevAddArgs =
  | { driver: 'file'; 'node-name': string; filename: string; 'read-only'?: boolean; 'auto-read-only'?: boolean; locking?: 'on' | 'off' | 'auto' }
  | { driver: 'raw'; 'node-name': string; file: string; 'read-only'?: boolean };

export interface DeviceAddArgs {
  driver: string;
  id: string;
  bus?: string;
  [prop: string]: string | number | boolean | undefined;
}

export interface BlockInfo {
  device: string;
  qdev?: string;
  removable: boolean;
  locked: boolean;
  inserted?: { file: string; ro: boolean; drv: string; 'node-name'?: string };
}

export interface MigrationCapabilityStatus { capability: string; state: boolean }

export interface MigrationInfo {
  status?: 'none' | 'setup' | 'cancelling' | 'cancelled' | 'active' | 'postcopy-active' | 'completed' | 'failed' | 'pre-switchover' | 'device' | 'wait-unplug';
  'error-desc'?: string;
  'total-time'?: number;
}

export interface QmpCommands {
  qmp_capabilities: { args: { enable?: string[] } | undefined; ret: Record<string, never> };
  'query-status': { args: undefined; ret: StatusInfo };
  'query-version': { args: undefined; ret: { qemu: { major: number; minor: number; micro: number }; package: string } };
  'query-block': { args: undefined; ret: BlockInfo[] };
  'query-named-block-nodes': { args: { flat?: boolean } | undefined; ret: Array<{ 'node-name': string; drv: string; ro: boolean; file: string }> };
  'query-migrate': { args: undefined; ret: MigrationInfo };
  quit: { args: undefined; ret: Record<string, never> };
  stop: { args: undefined; ret: Record<string, never> };
  cont: { args: undefined; ret: Record<string, never> };
  system_powerdown: { args: undefined; ret: Record<string, never> };
  'blockdev-add': { args: BlockdevAddArgs; ret: Record<string, never> };
  'blockdev-del': { args: { 'node-name': string }; ret: Record<string, never> };
  device_add: { args: DeviceAddArgs; ret: Record<string, never> };
  device_del: { args: { id: string }; ret: Record<string, never> };
  'migrate-set-capabilities': { args: { capabilities: MigrationCapabilityStatus[] }; ret: Record<string, never> };
  'migrate-incoming': { args: { uri: string }; ret: Record<string, never> };
  migrate: { args: { uri: string }; ret: Record<string, never> };
  /** An HMP command (e.g. `info jit`, read by bench/clone-memory.ts); its text output. */
  'human-monitor-command': { args: { 'command-line': string }; ret: string };
}

export type QmpCommand = keyof QmpCommands;
export type ArgsOf<C extends QmpCommand> = QmpCommands[C]['args'];
export type ReturnOf<C extends QmpCommand> = QmpCommands[C]['ret'];

/** Events and their `data`. */
export interface QmpEvents {
  SHUTDOWN: { guest: boolean; reason: 'host-error' | 'host-qmp-quit' | 'host-qmp-system-reset' | 'host-signal' | 'host-ui' | 'guest-shutdown' | 'guest-reset' | 'guest-panic' | 'subsystem-reset' | string };
  STOP: Record<string, never>;
  RESUME: Record<string, never>;
  RESET: { guest: boolean; reason: string };
  POWERDOWN: Record<string, never>;
  DEVICE_DELETED: { device?: string; path: string };
  GUEST_PANICKED: { action: 'pause' | 'poweroff' | 'run'; info?: Record<string, unknown> };
  MIGRATION: { status: NonNullable<MigrationInfo['status']> };
  /** The guest opened or closed a virtio-serial port (`id`: the port device's id). */
  VSERPORT_CHANGE: { id: string; open: boolean };
}

export type QmpEventName = keyof QmpEvents;

export interface QmpEvent<E extends QmpEventName = QmpEventName> {
  event: E;
  data: QmpEvents[E];
  timestamp: { seconds: number; microseconds: number };
}
