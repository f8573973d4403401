/**
 * Pull + convert time for a ~50 MB image (podvisor-test/big from hack/make-test-images) against
 * the raw tools doing the same work on the same image from the same local registry:
 *   skopeo copy (registry → OCI layout) + umoci raw unpack (layers → tree) + mkfs.erofs (tree → disk).
 * Then a second pull of the same image, which must transfer 0 bytes.
 *
 *   node --import tsx bench/image-pull.ts [runs]
 *
 * Each figure is the median of `runs` (default 3) fresh runs. The machine is shared: read the
 * ratio, not the absolute times.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageService } from '../src/image/image-service.js';
import { mkfsErofsArgs, MKFS_EROFS } from '../src/image/erofs.js';
import { pushTestImages, startRegistry } from '../test/helpers/registry.js';

const runs = Number(process.argv[2] ?? 3);
const QUIET = { stdio: ['ignore', 'ignore', 'pipe'] as ('ignore' | 'pipe')[] };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (n: number) => `${n.toFixed(0)} ms`;

const reg = await startRegistry();
const work = mkdtempSync(join(tmpdir(), 'podvisor-bench-image-'));
try {
  await pushTestImages(reg);
  const image = `${reg.host}/podvisor-test/big:latest`;

  const ours: number[] = [];
  const second: number[] = [];
  let firstBytes = 0;
  let secondBytes = -1;
  let diskBytes = 0;
  for (let i = 0; i < runs; i++) {
    const svc = new ImageService({ root: join(work, `ours-${i}`) });
    await svc.init();
    let t = performance.now();
    const id = await svc.pull(image);
    ours.push(performance.now() - t);
    firstBytes = svc.transfer.bytesReceived;
    diskBytes = statSync(svc.diskPath(id)).size;
    svc.transfer.reset();
    t = performance.now();
    await svc.pull(image);
    second.push(performance.now() - t);
    secondBytes = Math.max(secondBytes, svc.transfer.bytesReceived);
    rmSync(join(work, `ours-${i}`), { recursive: true, force: true });
  }

  const raw: { copy: number; unpack: number; mkfs: number }[] = [];
  for (let i = 0; i < runs; i++) {
    const dir = join(work, `raw-${i}`);
    mkdirSync(dir);
    const time = (fn: () => void) => { const t = performance.now(); fn(); return performance.now() - t; };
    const copy = time(() => execFileSync('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${image}`, `oci:${dir}/layout:big`], QUIET));
    const unpack = time(() => execFileSync('umoci', ['raw', 'unpack', '--image', `${dir}/layout:big`, `${dir}/rootfs`], QUIET));
    const mkfs = time(() => execFileSync(MKFS_EROFS, mkfsErofsArgs(`${dir}/disk.erofs`, `${dir}/rootfs`), QUIET));
    raw.push({ copy, unpack, mkfs });
    rmSync(dir, { recursive: true, force: true });
  }
  const rawTotal = median(raw.map((r) => r.copy + r.unpack + r.mkfs));

  console.log(`image: ${image}  (${(firstBytes / 1e6).toFixed(1)} MB transferred, erofs disk ${(diskBytes / 1e6).toFixed(1)} MB), median of ${runs} runs`);
  console.log(`podvisor pull + unpack + mkfs.erofs : ${ms(median(ours))}`);
  console.log(`raw tools                           : ${ms(rawTotal)}  (skopeo copy ${ms(median(raw.map((r) => r.copy)))}, umoci raw unpack ${ms(median(raw.map((r) => r.unpack)))}, mkfs.erofs ${ms(median(raw.map((r) => r.mkfs)))})`);
  console.log(`ratio podvisor / raw tools          : ${(median(ours) / rawTotal).toFixed(2)}`);
  console.log(`second pull of the same image       : ${ms(median(second))}, ${secondBytes} bytes transferred`);
} finally {
  await reg.stop();
  rmSync(work, { recursive: true, force: true });
}
