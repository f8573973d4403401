import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SandboxNetworks } from '../../src/network/sandbox-networks.js';
import { cleanupOnSignal } from '../helpers/signal-cleanup.js';

/**
 * A private CNI world for one test file: a conf dir the test writes, a bridge
 * with a name and private subnets nobody else uses (10.88.N.0/24 and
 * fd00:88:N::/64), host-local's allocations in the test's own folder. Cleanup
 * releases every attachment left on disk with podvisor's own code, then deletes
 * the bridge; it also runs on SIGINT/SIGTERM.
 */

export const CNI_BIN_DIRS = ['/usr/lib/cni'];

export interface CniWorld {
  dir: string;
  confDir: string;
  ipamDir: string;
  bridge: string;
  network: string;
  /** 10.88.N */
  v4Prefix: string;
  /** fd00:88:N */
  v6Prefix: string;
  /** The conflist for this world; `extra` plugins are appended (e.g. one that fails). */
  conflist(opts?: { dualStack?: boolean; extra?: object[] }): object;
  writeConfig(conf: object, file?: string): void;
  /** Everything host-local still holds (IP files) under the network's data dir. */
  allocatedIps(): string[];
  /** Host veths enslaved to the test bridge. */
  bridgePorts(): string[];
  /** iptables + ip6tables rules that mention `id`. */
  rulesMentioning(id: string): string[];
  cleanup(networks?: SandboxNetworks[]): Promise<void>;
}

export function createCniWorld(label: string): CniWorld {
  const n = 20 + (process.pid % 200);
  const dir = mkdtempSync(join(tmpdir(), `pvnet-${label}-`));
  const confDir = join(dir, 'net.d');
  mkdirSync(confDir);
  const bridge = `pvbr${process.pid % 100000}`;
  const network = `pvtest-${label}-${process.pid}`;
  const ipamDir = join(dir, 'ipam');
  const world: CniWorld = {
    dir, confDir, ipamDir, bridge, network, v4Prefix: `10.88.${n}`, v6Prefix: `fd00:88:${n}`,
    conflist({ dualStack = true, extra = [] } = {}) {
      const ranges: object[] = [[{ subnet: `10.88.${n}.0/24` }]];
      const routes: object[] = [{ dst: '0.0.0.0/0' }];
      if (dualStack) {
        ranges.push([{ subnet: `fd00:88:${n}::/64` }]);
        routes.push({ dst: '::/0' });
      }
      return {
        cniVersion: '1.0.0',
        name: network,
        plugins: [
          { type: 'bridge', bridge, isGateway: true, ipMasq: false, hairpinMode: true, ipam: { type: 'host-local', dataDir: ipamDir, ranges, routes } },
          { type: 'portmap', capabilities: { portMappings: true }, snat: true },
          ...extra,
        ],
      };
    },
    writeConfig(conf, file = '10-podvisor-test.conflist') {
      writeFileSync(join(confDir, file), JSON.stringify(conf, null, 2));
    },
    allocatedIps() {
      const d = join(ipamDir, network);
      if (!existsSync(d)) return [];
      return readdirSync(d).filter((f) => /^[0-9a-f.:]+$/.test(f));
    },
    bridgePorts() {
      try {
        return (JSON.parse(execFileSync('ip', ['-j', 'link', 'show', 'master', bridge], { encoding: 'utf8' }) || '[]') as Array<{ ifname: string }>).map((l) => l.ifname);
      } catch {
        return [];
      }
    },
    rulesMentioning(id) {
      return ['iptables-save', 'ip6tables-save'].flatMap((cmd) => execFileSync(cmd, { encoding: 'utf8' }).split('\n').filter((l) => l.includes(id)));
    },
    async cleanup(networks = []) {
      forget();
      const nets = networks.length ? networks : [networksFor(world, join(dir, 'netns'), join(dir, 'cache'))];
      for (const net of nets) await releaseAllOnDisk(net).catch(() => undefined);
      try {
        execFileSync('ip', ['link', 'del', bridge], { stdio: 'ignore' });
      } catch {
        /* never made */
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const forget = cleanupOnSignal(() => world.cleanup());
  return world;
}

export function networksFor(world: CniWorld, netnsDir: string, cacheDir: string, podCidr = ''): SandboxNetworks {
  return new SandboxNetworks({ confDir: world.confDir, binDirs: CNI_BIN_DIRS, netnsDir, cacheDir, podCidr: () => podCidr });
}

/** Releases every attachment whose record or namespace is still on disk. */
async function releaseAllOnDisk(net: SandboxNetworks): Promise<void> {
  const ids = new Set<string>();
  const { cacheDir, netnsDir } = net.dirs;
  for (const f of existsSync(cacheDir) ? readdirSync(cacheDir) : []) if (f.endsWith('.json')) ids.add(f.slice(0, -5));
  for (const f of existsSync(netnsDir) ? readdirSync(netnsDir) : []) ids.add(f);
  for (const id of ids) await net.release(id);
}
