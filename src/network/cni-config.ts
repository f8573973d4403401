import { accessSync, constants, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The node's CNI network: the first valid network configuration file in the
 * configured folder (lexical order, as libcni and containerd pick it), with its
 * plugins found in the binary folders. Read again on every use, so a config
 * that appears or changes while podvisord runs is taken up by the next
 * Status or RunPodSandbox without a restart.
 */

/** Spec versions podvisor speaks; plugin lists (conflist) exist since 0.3.0. */
export const SUPPORTED_CNI_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];
const CONFIG_EXTENSIONS = ['.conflist', '.conf', '.json'];
/** A plugin type is a file name in a bin dir, never a path. */
const PLUGIN_TYPE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const MAX_CONFIG_BYTES = 1 << 20;

export interface CniPluginConfig {
  type: string;
  /** Runtime capabilities the plugin asks for (portMappings, dns, ipRanges, bandwidth …). */
  capabilities?: Record<string, boolean>;
  [key: string]: unknown;
}

export interface CniNetworkList {
  cniVersion: string;
  name: string;
  disableCheck?: boolean;
  plugins: CniPluginConfig[];
}

export interface CniNetwork {
  /** The file it came from. */
  file: string;
  list: CniNetworkList;
  /** Absolute path of each plugin's executable, by type. */
  binaries: Record<string, string>;
}

export type CniConfigState =
  | { ready: true; network: CniNetwork }
  /** `present`: some config file exists but none is usable (a broken config is an error, no config means no pod network). */
  | { ready: false; present: boolean; reason: string; message: string };

export function loadCniNetwork(confDir: string, binDirs: string[]): CniConfigState {
  let names: string[];
  try {
    names = readdirSync(confDir).filter((n) => CONFIG_EXTENSIONS.some((x) => n.endsWith(x))).sort();
  } catch (e) {
    return { ready: false, present: false, reason: 'NoCniConfig', message: `no CNI network config: cannot read ${confDir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
  if (names.length === 0) {
    return { ready: false, present: false, reason: 'NoCniConfig', message: `no CNI network config (*.conflist, *.conf, *.json) in ${confDir}` };
  }
  const problems: string[] = [];
  for (const name of names) {
    const file = join(confDir, name);
    try {
      const list = parseNetworkFile(file);
      return { ready: true, network: { file, list, binaries: findPlugins(list, binDirs) } };
    } catch (e) {
      problems.push(`${name}: ${(e as Error).message}`);
    }
  }
  return { ready: false, present: true, reason: 'InvalidCniConfig', message: `no usable CNI network config in ${confDir}: ${problems.join('; ')}` };
}

function parseNetworkFile(file: string): CniNetworkList {
  if (statSync(file).size > MAX_CONFIG_BYTES) throw new Error(`larger than ${MAX_CONFIG_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`not JSON (${(e as Error).message})`);
  }
  if (!isObject(doc)) throw new Error('not a JSON object');
  // A single-plugin .conf becomes a one-entry list, as libcni does.
  const raw = Array.isArray(doc.plugins) ? doc : { cniVersion: doc.cniVersion, name: doc.name, plugins: [doc] };
  return validateNetworkList(raw);
}

export function validateNetworkList(raw: Record<string, unknown>): CniNetworkList {
  const { cniVersion, name, plugins, disableCheck } = raw;
  if (typeof cniVersion !== 'string' || !SUPPORTED_CNI_VERSIONS.includes(cniVersion)) {
    throw new Error(`cniVersion ${JSON.stringify(cniVersion)} is not one of ${SUPPORTED_CNI_VERSIONS.join(', ')}`);
  }
  if (typeof name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) throw new Error(`network name ${JSON.stringify(name)} is not valid`);
  if (!Array.isArray(plugins) || plugins.length === 0) throw new Error('"plugins" is not a non-empty list');
  for (const p of plugins) {
    if (!isObject(p) || typeof p.type !== 'string' || !PLUGIN_TYPE.test(p.type)) throw new Error(`plugin type ${JSON.stringify(isObject(p) ? p.type : p)} is not a plugin name`);
  }
  return { cniVersion, name, plugins: plugins as CniPluginConfig[], ...(disableCheck === true ? { disableCheck: true } : {}) };
}

export function findPlugins(list: CniNetworkList, binDirs: string[]): Record<string, string> {
  const found: Record<string, string> = {};
  for (const { type } of list.plugins) {
    const path = binDirs.map((d) => join(d, type)).find(isExecutable);
    if (!path) throw new Error(`plugin "${type}" is not an executable in ${binDirs.join(', ')}`);
    found[type] = path;
  }
  return found;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
