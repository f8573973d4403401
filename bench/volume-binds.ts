// Host side of CreateContainer's volumes in share mode virtiofs, without a VM: the binds of
// kubelet's usual 6 mounts (token, configMap, secret, emptyDir, etc-hosts, termination log)
// into a sandbox share, and their removal. The VM-side cost is in bench/volumes.ts.
//
//   node --import tsx bench/volume-binds.ts [rounds=10]
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ShareDir, type ShareVolume } from '../src/volume/share-dir.js';

const rounds = Number(process.argv[2] ?? 10);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const dir = mkdtempSync('/tmp/pv-binds-');
const share = await ShareDir.create(join(dir, 'share'));
try {
  const src = (name: string, file = false) => {
    const p = join(dir, 'src', name);
    if (file) {
      mkdirSync(join(dir, 'src'), { recursive: true });
      writeFileSync(p, 'x');
    } else {
      mkdirSync(p, { recursive: true });
      writeFileSync(join(p, 'f'), 'x');
    }
    return p;
  };
  const vol = (hostPath: string, readonly: boolean): ShareVolume => ({ hostPath, readonly, recursiveReadOnly: false, propagation: 'private' });
  const six = [vol(src('token'), true), vol(src('config'), true), vol(src('secret'), true), vol(src('scratch'), false), vol(src('hosts', true), false), vol(src('termlog', true), false)];
  const add: number[] = [];
  const remove: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const id = `${'c'.repeat(8)}${i.toString(16).padStart(4, '0')}`.replace(/c/g, 'a');
    const t0 = performance.now();
    await share.addVolumes(id, six.map((vol, index) => ({ index, vol })));
    const t1 = performance.now();
    await share.removeContainer(id);
    add.push(t1 - t0);
    remove.push(performance.now() - t1);
  }
  console.log(`6 binds into the share: add ${Math.round(median(add))} ms, remove ${Math.round(median(remove))} ms (median of ${rounds})`);
} finally {
  await share.destroy();
  rmSync(dir, { recursive: true, force: true });
}
