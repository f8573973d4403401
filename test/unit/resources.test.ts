import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeResources, ociResources } from '../../agent/resources.js';
import { parsePressure } from '../../agent/stats.js';
import { criSignalName, criSignalNumber } from '../../src/cri/signal-names.js';
import { resolveUser } from '../../src/pod/user.js';

describe('agent resources: CRI limits as OCI linux.resources for crun update', () => {
  test('zero means leave; a positive quota and period go to cpu; memory and cpuset pass through', () => {
    assert.deepEqual(ociResources({ cpuQuota: 50000, cpuPeriod: 100000, cpuShares: 0, memoryLimitBytes: 64 << 20, cpusetCpus: '0-1' }), {
      cpu: { quota: 50000, period: 100000, cpus: '0-1' },
      memory: { limit: 64 << 20 },
    });
    assert.deepEqual(ociResources({}), {});
  });

  test('a negative quota lifts the limit through cpu.max, keeping a given period', () => {
    assert.deepEqual(ociResources({ cpuQuota: -1 }), { unified: { 'cpu.max': 'max' } });
    assert.deepEqual(ociResources({ cpuQuota: -1, cpuPeriod: 50000 }), { unified: { 'cpu.max': 'max 50000' } });
    // ... and replaces the old quota in the spec a not-yet-started container keeps.
    assert.deepEqual(mergeResources({ cpu: { quota: 1000, period: 2000, shares: 5 } }, ociResources({ cpuQuota: -1 })), {
      cpu: { shares: 5 }, unified: { 'cpu.max': 'max' },
    });
  });

  test('refuses bad values and cgroup files outside the container\'s limits', () => {
    assert.throws(() => ociResources({ memoryLimitBytes: 1.5 }), /memory_limit_in_bytes/);
    assert.throws(() => ociResources({ cpusetCpus: '0;rm' }), /cpuset_cpus/);
    assert.throws(() => ociResources({ unified: { 'cgroup.procs': '1' } }), /cannot be set/);
    assert.throws(() => ociResources({ unified: { '../memory.max': '1' } }), /cannot be set/);
    assert.throws(() => ociResources({ hugepageLimits: [{ pageSize: '2M', limitBytes: 1 }] }), /page size/);
    assert.deepEqual(ociResources({ unified: { 'memory.high': '1000000' }, hugepageLimits: [{ pageSize: '2MB', limitBytes: 4 << 20 }] }), {
      unified: { 'memory.high': '1000000' }, hugepageLimits: [{ pageSize: '2MB', limit: 4 << 20 }],
    });
  });

  test('an update lays over the spec field by field', () => {
    assert.deepEqual(mergeResources({ memory: { limit: 10 }, cpu: { shares: 2 } }, { cpu: { quota: 5 } }), {
      memory: { limit: 10 }, cpu: { shares: 2, quota: 5 },
    });
  });
});

describe('PSI files', () => {
  test('parses some and full; a missing or empty file is null', () => {
    const p = parsePressure('some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=42\n');
    assert.deepEqual(p, {
      some: { avg10: 1.5, avg60: 0.25, avg300: 0, totalUsec: 123456 },
      full: { avg10: 0, avg60: 0, avg300: 0, totalUsec: 42 },
    });
    assert.deepEqual(parsePressure('some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n'), { some: { avg10: 0, avg60: 0, avg300: 0, totalUsec: 9 } });
    assert.equal(parsePressure(''), null);
    assert.equal(parsePressure('garbage'), null);
  });
});

describe('CRI Signal names', () => {
  test('names and numbers both ways, real-time signals included', () => {
    assert.equal(criSignalNumber('SIGUSR1'), 10);
    assert.equal(criSignalNumber('SIGRTMIN'), 34);
    assert.equal(criSignalNumber('SIGRTMINPLUS3'), 37);
    assert.equal(criSignalNumber('SIGRTMAXMINUS1'), 63);
    assert.equal(criSignalNumber('SIGPOLL'), 29);
    assert.equal(criSignalName(15), 'SIGTERM');
    assert.equal(criSignalName(6), 'SIGABRT');
    assert.equal(criSignalName(37), 'SIGRTMINPLUS3');
    assert.equal(criSignalName(60), 'SIGRTMAXMINUS4');
    assert.equal(criSignalName(64), 'SIGRTMAX');
  });
});

describe('SupplementalGroupsPolicy', () => {
  const passwd = 'user:x:1000:1000::/home/user:/bin/sh\n';
  const group = 'user:x:1000:\nstaff:x:50:user\n';
  test('Merge adds the image\'s memberships, Strict keeps only the pod\'s groups', () => {
    assert.deepEqual(resolveUser({ uid: 1000, supplementalGroups: [2000] }, passwd, group).additionalGids, [50, 2000]);
    assert.deepEqual(resolveUser({ uid: 1000, supplementalGroups: [2000], strictGroups: true }, passwd, group).additionalGids, [2000]);
  });
});

describe('bind-mount targets made for user-namespace containers', () => {
  test('missing files and directories are made inside the rootfs; a symlink stops the walk', async () => {
    const { mkdtempSync, mkdirSync, writeFileSync, symlinkSync, existsSync, rmSync, statSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { createBindTargets } = await import('../../agent/mount-targets.js');
    const dir = mkdtempSync(`${tmpdir()}/pv-bt-`);
    try {
      const root = `${dir}/rootfs`;
      const outside = `${dir}/outside`;
      mkdirSync(`${root}/etc`, { recursive: true });
      mkdirSync(outside);
      writeFileSync(`${dir}/hostname`, 'h');
      symlinkSync(outside, `${root}/evil`);
      createBindTargets(root, [
        { destination: '/etc/hostname', type: 'bind', source: `${dir}/hostname` },
        { destination: '/data/deep', type: 'bind', source: outside },
        { destination: '/evil/x', type: 'bind', source: `${dir}/hostname` },
        { destination: '/proc', type: 'proc', source: 'proc' },
      ]);
      assert.ok(statSync(`${root}/etc/hostname`).isFile());
      assert.ok(statSync(`${root}/data/deep`).isDirectory());
      assert.equal(existsSync(`${outside}/x`), false, 'nothing is made through a symlink');
      assert.equal(existsSync(`${root}/proc`), false, 'only bind mounts');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
