import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../src/config/config.js';
import { podResources, profileForHandler, sizePodVm, vmProfileFor } from '../../src/pod/vm-sizing.js';
import { parseStopSignal } from '../../src/pod/signals.js';
import { isPodvisorError } from '../../src/errors.js';
import type { LinuxResources } from '../../src/pod/records.js';

const runtimes = loadConfig(undefined).runtimes;
const res = (over: Partial<LinuxResources>): LinuxResources => ({
  cpuPeriod: 0, cpuQuota: 0, cpuShares: 0, memoryLimitInBytes: 0, oomScoreAdj: 0, cpusetCpus: '', cpusetMems: '', ...over,
});

test('handlers "" and kata exist; an unknown one is refused naming the known ones', () => {
  assert.ok(profileForHandler('', runtimes));
  assert.ok(profileForHandler('kata', runtimes));
  assert.throws(() => profileForHandler('runsc', runtimes), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /"runsc".*"kata"/.test(e.message));
});

test('the VM grows with the pod\'s limits and overhead, never below the profile, never past its maximum', () => {
  const p = profileForHandler('', runtimes);
  assert.deepEqual(sizePodVm(p), { vcpus: p.vcpus, memoryMiB: p.memoryMiB });
  const big = sizePodVm(p, res({ cpuPeriod: 100000, cpuQuota: 250000, memoryLimitInBytes: 1024 * 1024 * 1024 }), res({ memoryLimitInBytes: 64 * 1024 * 1024 }));
  assert.deepEqual(big, { vcpus: 3, memoryMiB: 1024 + 64 + p.overheadMemoryMiB });
  assert.deepEqual(sizePodVm(p, res({ memoryLimitInBytes: 1024 * 1024 })), { vcpus: p.vcpus, memoryMiB: p.memoryMiB });
  assert.throws(() => sizePodVm(p, res({ cpuPeriod: 100000, cpuQuota: 100000 * (p.maxVcpus + 1) })), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /max_vcpus/.test(e.message));
  assert.throws(() => sizePodVm(p, res({ memoryLimitInBytes: (p.maxMemoryMiB + 1) * 1024 * 1024 })), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /max_memory_mib/.test(e.message));
  const vm = vmProfileFor(p, big);
  assert.equal(vm.memoryMiB, big.memoryMiB);
  assert.equal(vm.kernel, p.kernel);
});

test('stop signals by name, short name or number', () => {
  assert.equal(parseStopSignal(undefined), 15);
  assert.equal(parseStopSignal('SIGQUIT'), 3);
  assert.equal(parseStopSignal('quit'), 3);
  assert.equal(parseStopSignal('9'), 9);
  assert.throws(() => parseStopSignal('SIGNOPE'), (e) => isPodvisorError(e, 'INVALID_ARGUMENT'));
});

test('containerd\'s io.kubernetes.cri.sandbox-* annotations size the VM when linux.resources is absent, within the bounds', () => {
  const p = profileForHandler('', runtimes);
  const annotations = {
    'io.kubernetes.cri.sandbox-cpu-period': '100000', 'io.kubernetes.cri.sandbox-cpu-quota': '200000',
    'io.kubernetes.cri.sandbox-memory': String(1024 * 1024 * 1024),
  };
  assert.deepEqual(sizePodVm(p, podResources({ annotations })), { vcpus: 2, memoryMiB: 1024 + p.overheadMemoryMiB });
  // linux.resources wins over the annotations.
  assert.deepEqual(podResources({ annotations, resources: res({ memoryLimitInBytes: 5 }) }), res({ memoryLimitInBytes: 5 }));
  assert.equal(podResources({ annotations: {} }), undefined);
  assert.throws(() => podResources({ annotations: { 'io.kubernetes.cri.sandbox-memory': '1e9' } }), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /sandbox-memory/.test(e.message));
  assert.throws(() => sizePodVm(p, podResources({ annotations: { 'io.kubernetes.cri.sandbox-memory': String((p.maxMemoryMiB + 1) * 1024 * 1024) } })),
    (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /max_memory_mib/.test(e.message));
});
