/**
 * What the VM hardening of issue 9 costs on this machine:
 * - the KVM probe run once at daemon start, against a bare QEMU start in the same run;
 * - picking a per-VM uid (a scan of /proc) — the price of one uid per VM over one shared uid;
 * - launch to QMP confined (own uid via -runas, cgroup limits) against unconfined.
 *
 *   node --import tsx bench/vm-hardening.ts [--rounds N]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { configureLogging } from '../src/log.js';
import { QemuUsers } from '../src/vm/confinement.js';
import { locateGuestImage } from '../src/vm/guest-image.js';
import { probeKvm } from '../src/vm/kvm-probe.js';
import { withProfileDefaults } from '../src/vm/profile.js';
import { Vm, type VmConfinement } from '../src/vm/vm.js';

configureLogging('error');
const roundsArg = process.argv.indexOf('--rounds');
const rounds = roundsArg > 0 ? Number(process.argv[roundsArg + 1]) : 5;
const root = mkdtempSync('/tmp/podvisor-bench-hardening-');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
function line(label: string, ms: number[], extra = ''): void {
  const s = [...ms].sort((a, b) => a - b);
  console.log(`${label.padEnd(52)} median ${median(ms).toFixed(1).padStart(7)} ms   min ${s[0]!.toFixed(1).padStart(7)}   max ${s.at(-1)!.toFixed(1).padStart(7)}${extra}`);
}
async function time<T>(fn: () => Promise<T> | T): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

try {
  console.log(`VM hardening benchmark: ${rounds} rounds`);
  const bare: number[] = [];
  const probeHere: number[] = [];
  const probeBroken: number[] = [];
  const probeRuns: number[] = [];
  const fake = join(root, 'fake-kvm');
  writeFileSync(fake, '');
  for (let i = 0; i < rounds; i++) {
    bare.push(await time(() => execFileSync('qemu-system-x86_64', ['-M', 'none', '-nodefaults', '-display', 'none', '-version'], { stdio: 'ignore' })));
    probeHere.push(await time(() => probeKvm()));
    probeBroken.push(await time(() => probeKvm({ device: fake })));
    // The guest really runs here (TCG): the cost a host with working KVM pays, give or take.
    probeRuns.push(await time(() => probeKvm({ device: '/dev/null', accel: 'tcg' })));
  }
  const b = median(bare);
  line('bare QEMU start (qemu-system-x86_64 -version)', bare);
  line('KVM probe on this host (/dev/kvm absent)', probeHere, `   ratio ${(median(probeHere) / b).toFixed(2)}`);
  line('KVM probe, device opens but KVM fails (QEMU refuses)', probeBroken, `   ratio ${(median(probeBroken) / b).toFixed(2)}`);
  line('KVM probe whose test guest runs (under TCG)', probeRuns, `   ratio ${(median(probeRuns) / b).toFixed(2)}`);

  const scan: number[] = [];
  for (let i = 0; i < rounds; i++) scan.push(await time(() => new QemuUsers('podvisor-qemu').allocate(`bench-scan-${i}`)));
  line('per-VM uid: first allocation (scans /proc)', scan);
  const users = new QemuUsers('podvisor-qemu');
  const alloc: number[] = [];
  for (let i = 0; i < rounds * 20; i++) {
    alloc.push(await time(() => users.release(users.allocate(`bench-${i}`).uid)));
  }
  line('per-VM uid: later allocations (one uid for all: 0)', alloc);

  const profile = (() => {
    const image = locateGuestImage();
    return withProfileDefaults({ kernel: image.kernel, initrd: image.initrd, systemDisk: image.systemDisk, memoryMiB: 512 });
  })();
  const confinement: VmConfinement = { users, cgroupParent: 'podvisor-bench', overheadMiB: 256, pidsMax: 256 };
  const plain: number[] = [];
  const confined: number[] = [];
  let seq = 0;
  for (let i = 0; i < rounds; i++) {
    for (const [list, conf] of [[plain, undefined], [confined, confinement]] as const) {
      const id = `bench-h${++seq}`;
      let vm: Vm | undefined;
      list.push(await time(async () => {
        vm = await Vm.launch({ id, profile, runDir: join(root, id), confinement: conf });
      }));
      await vm!.destroy({ timeoutMs: 5000 });
    }
  }
  line('launch to QMP, QEMU as root, no limits', plain);
  line('launch to QMP, own uid + cgroup limits', confined, `   ratio ${(median(confined) / median(plain)).toFixed(2)}`);
} finally {
  rmSync(root, { recursive: true, force: true });
}
