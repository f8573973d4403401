import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { milliCpuOf, sizeVm, type SizingPolicy } from '../../src/vm/sizing.js';

const policy: SizingPolicy = {
  defaultVcpus: 1, defaultMemoryMiB: 512, overheadVcpus: 0, overheadMemoryMiB: 192, maxVcpus: 4, maxMemoryMiB: 4096,
};
const MiB = 1024 * 1024;

describe('VM sizing', () => {
  it('uses the profile defaults for a pod without limits', () => {
    assert.deepEqual(sizeVm([], policy), { vcpus: 1, memoryMiB: 512 });
    assert.deepEqual(sizeVm([{}, { cpuQuota: -1, cpuPeriod: 100_000 }], policy), { vcpus: 1, memoryMiB: 512 });
  });

  it('sums container limits and adds the overhead', () => {
    const size = sizeVm([
      { cpuQuota: 150_000, cpuPeriod: 100_000, memoryBytes: 600 * MiB },
      { milliCpu: 700, memoryBytes: 300 * MiB + 1 },
    ], policy);
    // 1500m + 700m = 2200m -> 3 vCPUs; 600 + 301 (rounded up) + 192 MiB.
    assert.deepEqual(size, { vcpus: 3, memoryMiB: 1093 });
  });

  it('never goes below the defaults', () => {
    assert.deepEqual(sizeVm([{ milliCpu: 100, memoryBytes: 16 * MiB }], policy), { vcpus: 1, memoryMiB: 512 });
  });

  it('adds the vCPU overhead', () => {
    assert.deepEqual(sizeVm([{ milliCpu: 2000 }], { ...policy, overheadVcpus: 1 }), { vcpus: 3, memoryMiB: 512 });
  });

  it('converts CFS quota/period to millicores, rounding up', () => {
    assert.equal(milliCpuOf({ cpuQuota: 50_001, cpuPeriod: 100_000 }), 501);
    assert.equal(milliCpuOf({ cpuQuota: 0, cpuPeriod: 100_000 }), undefined);
    assert.equal(milliCpuOf({ cpuQuota: 10_000, cpuPeriod: 0 }), undefined);
  });

  it('refuses more vCPUs than the bound with a message that says why', () => {
    assert.throws(() => sizeVm([{ milliCpu: 3000 }, { milliCpu: 1500 }], policy), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.match(e.message, /needs 5 vCPUs .*4500m.*more than the 4/);
      return true;
    });
  });

  it('refuses more memory than the bound', () => {
    assert.throws(() => sizeVm([{ memoryBytes: 4000 * MiB }], policy), { code: 'INVALID_ARGUMENT', message: /4192 MiB.*4096 MiB/ });
  });

  it('rejects negative or non-finite limits and a broken policy', () => {
    assert.throws(() => sizeVm([{ memoryBytes: -1 }], policy), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => sizeVm([{ milliCpu: Number.NaN }], policy), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => sizeVm([], { ...policy, defaultVcpus: 8 }), { code: 'INVALID_ARGUMENT', message: /defaultVcpus 8 exceeds maxVcpus 4/ });
    assert.throws(() => sizeVm([], { ...policy, maxMemoryMiB: 1.5 }), { code: 'INVALID_ARGUMENT' });
  });
});
