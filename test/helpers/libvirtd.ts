import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, chmodSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanupOnSignal } from './signal-cleanup.js';

/**
 * A libvirtd of the test's own: a private mount namespace puts fresh directories over
 * libvirt's fixed state paths (/etc/libvirt, /run/libvirt, /var/lib/libvirt, …), and its
 * socket is in a directory of its own, so no system libvirt is used or disturbed and no
 * systemd is needed. Its qemu.conf is the packaged one's: QEMU as libvirt's default
 * unprivileged user (`libvirt-qemu`), dynamic ownership, the security driver libvirt finds,
 * a private /dev per domain; podvisor's domains name their own uid (a per-domain DAC label).
 * Only the log handling differs (no virtlogd here). The state directories have the
 * package's modes, so QEMU (not root) can reach libvirt's per-domain files. Domain type qemu
 * under TCG.
 */
export interface PrivateLibvirtd {
  dir: string;
  uri: string;
  /** Stops libvirtd (SIGTERM) and starts it again on the same directories; running domains stay. */
  restart(): Promise<void>;
  virsh(...args: string[]): string;
  /** libvirtd's pid (the daemon's own memory is a per-node cost of this backend). */
  pid(): number | undefined;
  /** Destroys every domain it still has, stops libvirtd and removes its directories. */
  stop(): Promise<void>;
}

/** Why libvirt tests cannot run here, or undefined when they can. */
export async function libvirtUnavailable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'the libvirt tests start their own libvirtd, which needs root';
  for (const bin of ['/usr/sbin/libvirtd', '/usr/bin/virsh', '/usr/bin/unshare']) {
    try {
      accessSync(bin, constants.X_OK);
    } catch {
      return `${bin} is missing: install libvirt with PODVISOR_WITH_LIBVIRT=1 hack/install-deps`;
    }
  }
  try {
    const specifier: string = '@unraid/libvirt'; // optional: not resolved by tsc
    await import(specifier);
  } catch (e) {
    return `the optional package @unraid/libvirt is not installed or not built (${(e as Error).message}; PODVISOR_WITH_LIBVIRT=1 hack/install-deps builds it)`;
  }
  return undefined;
}

const STATE_DIRS = { etc: '/etc/libvirt', run: '/run/libvirt', lib: '/var/lib/libvirt', log: '/var/log/libvirt', cache: '/var/cache/libvirt' } as const;
/** Debian's modes for those directories (what the mounted directory's own mode stands in for). */
const STATE_DIR_MODES: Record<keyof typeof STATE_DIRS, number> = { etc: 0o755, run: 0o755, lib: 0o755, log: 0o700, cache: 0o711 };

export async function startPrivateLibvirtd(): Promise<PrivateLibvirtd> {
  // Short: the socket path must stay under 108 bytes.
  mkdirSync('/run/pvlv', { recursive: true, mode: 0o700 });
  const dir = mkdtempSync('/run/pvlv/d');
  mkdirSync(join(dir, 'sock'), { mode: 0o700 });
  for (const [sub, mode] of Object.entries(STATE_DIR_MODES)) {
    mkdirSync(join(dir, sub));
    chmodSync(join(dir, sub), mode);
  }
  for (const target of Object.values(STATE_DIRS)) mkdirSync(target, { recursive: true });
  writeFileSync(join(dir, 'etc', 'libvirtd.conf'), [
    `unix_sock_dir = "${dir}/sock"`, 'unix_sock_rw_perms = "0700"', 'unix_sock_ro_perms = "0700"',
    'auth_unix_rw = "none"', 'auth_unix_ro = "none"', `log_outputs = "3:file:${dir}/libvirtd.log"`, '',
  ].join('\n'));
  // No virtlogd here: libvirtd writes QEMU's output itself. Everything else is libvirt's default.
  writeFileSync(join(dir, 'etc', 'qemu.conf'), 'stdio_handler = "file"\n');
  const uri = `qemu+unix:///system?socket=${dir}/sock/libvirt-sock`;
  let proc: ChildProcess | undefined;

  const logTail = () => {
    try {
      return readFileSync(join(dir, 'libvirtd.log'), 'utf8').split('\n').filter((l) => / error : /.test(l)).slice(-3).join(' | ');
    } catch {
      return 'no log';
    }
  };
  const virsh = (...args: string[]) => execFileSync('virsh', ['-c', uri, ...args], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
  const start = async () => {
    const mounts = Object.entries(STATE_DIRS).map(([sub, target]) => `mount --bind ${dir}/${sub} ${target}`).join(' && ');
    proc = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `${mounts} && exec libvirtd --config ${dir}/etc/libvirtd.conf --pid-file ${dir}/libvirtd.pid`], {
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`libvirtd exited with ${proc.exitCode}: ${logTail()}`);
      try {
        virsh('version');
        return;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`libvirtd did not answer within 120 s: ${(e as Error).message}`);
        await sleep(500);
      }
    }
  };
  const stopDaemon = async () => {
    const p = proc;
    if (!p || p.exitCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await Promise.race([gone, sleep(15_000)]);
    if (p.exitCode === null) p.kill('SIGKILL');
  };
  const stop = async () => {
    try {
      for (const name of virsh('list', '--name').split('\n').map((l) => l.trim()).filter(Boolean)) {
        try {
          virsh('destroy', name);
        } catch {
          /* ended meanwhile */
        }
      }
    } catch {
      /* libvirtd not answering: nothing more to ask it */
    }
    await stopDaemon();
    forget();
    rmSync(dir, { recursive: true, force: true });
  };
  const forget = cleanupOnSignal(stop);
  try {
    await start();
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    dir,
    uri,
    virsh,
    stop,
    pid: () => proc?.pid,
    async restart() {
      await stopDaemon();
      await start();
    },
  };
}
