import { failedPrecondition } from '../errors.js';
import type { CniNetworkList, CniPluginConfig } from './cni-config.js';
import { runCommand } from './host-command.js';

/**
 * Running a CNI plugin list as the spec says: ADD through the plugins in order,
 * each given the previous one's result; DEL in reverse order with the cached
 * result; CHECK in order with it. Parameters go in the environment, the network
 * config on stdin, the result or error comes back as JSON on stdout.
 */

/** A CNI plugin that hangs (a stuck iptables lock, a dhcp daemon) must not hold RunPodSandbox forever. */
const PLUGIN_TIMEOUT_MS = 60_000;

/** Everything needed to address one attachment again later (DEL after a restart): written to disk before ADD. */
export interface CniAttachment {
  containerId: string;
  netns: string;
  ifName: string;
  /** CNI_ARGS, `K=V;K=V`. */
  args: string;
  /** Capability values: portMappings, dns, ipRanges, bandwidth; each plugin sees the ones it declares. */
  runtimeConfig: Record<string, unknown>;
}

export type CniCommand = 'ADD' | 'DEL' | 'CHECK';

/** spec: CHECK exists from 0.4.0 and DEL gets prevResult from 0.4.0. */
export function versionAtLeast040(v: string): boolean {
  return !v.startsWith('0.3.') && !v.startsWith('0.2.') && !v.startsWith('0.1.');
}

export async function cniAdd(list: CniNetworkList, binaries: Record<string, string>, binDirs: string[], att: CniAttachment): Promise<unknown> {
  let prev: unknown;
  for (const plugin of list.plugins) prev = await invokePlugin('ADD', list, plugin, binaries, binDirs, att, prev);
  return prev;
}

export async function cniDel(list: CniNetworkList, binaries: Record<string, string>, binDirs: string[], att: CniAttachment, cached: unknown): Promise<void> {
  const prev = versionAtLeast040(list.cniVersion) ? cached : undefined;
  for (const plugin of [...list.plugins].reverse()) await invokePlugin('DEL', list, plugin, binaries, binDirs, att, prev);
}

export async function cniCheck(list: CniNetworkList, binaries: Record<string, string>, binDirs: string[], att: CniAttachment, cached: unknown): Promise<void> {
  for (const plugin of list.plugins) await invokePlugin('CHECK', list, plugin, binaries, binDirs, att, cached);
}

async function invokePlugin(
  command: CniCommand, list: CniNetworkList, plugin: CniPluginConfig, binaries: Record<string, string>, binDirs: string[],
  att: CniAttachment, prevResult: unknown,
): Promise<unknown> {
  const binary = binaries[plugin.type];
  if (!binary) throw failedPrecondition(`CNI plugin "${plugin.type}" of network "${list.name}" was not found`);
  const runtimeConfig = Object.fromEntries(
    Object.entries(att.runtimeConfig).filter(([cap]) => plugin.capabilities?.[cap] === true),
  );
  const conf: Record<string, unknown> = { ...plugin, cniVersion: list.cniVersion, name: list.name };
  delete conf.capabilities;
  if (Object.keys(runtimeConfig).length > 0) conf.runtimeConfig = runtimeConfig;
  if (prevResult !== undefined) conf.prevResult = prevResult;
  const env = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: att.containerId,
    CNI_NETNS: att.netns,
    CNI_IFNAME: att.ifName,
    CNI_ARGS: att.args,
    CNI_PATH: binDirs.join(':'),
  };
  const r = await runCommand(binary, [], { input: JSON.stringify(conf), env, timeoutMs: PLUGIN_TIMEOUT_MS });
  if (r.code !== 0) {
    throw failedPrecondition(`CNI ${command} of plugin "${plugin.type}" (network "${list.name}") failed: ${pluginError(r.stdout, r.stderr, r.code)}`);
  }
  if (command !== 'ADD') return undefined;
  try {
    return JSON.parse(r.stdout);
  } catch {
    throw failedPrecondition(`CNI ADD of plugin "${plugin.type}" returned no JSON result: ${r.stdout.slice(0, 200)}`);
  }
}

/** The spec's error document `{ code, msg, details }`, or whatever the plugin printed. */
function pluginError(stdout: string, stderr: string, code: number | null): string {
  try {
    const e = JSON.parse(stdout) as { code?: number; msg?: string; details?: string };
    if (e.msg) return `${e.msg}${e.details ? ` (${e.details})` : ''} [CNI error ${e.code ?? '?'}]`;
  } catch {
    /* not the spec's document */
  }
  return (stderr || stdout).trim().slice(0, 500) || `exit code ${code}`;
}
