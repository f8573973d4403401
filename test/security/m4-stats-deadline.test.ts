import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StatsService } from '../../src/pod/stats-service.js';
import { podSetup } from './pod-setup.js';

/**
 * M4 (security review 2026-12-01): stats fanned out to every guest and waited
 * for the slowest (up to 60 s), so one guest stalled ListContainerStats and
 * ListPodSandboxStats for the whole node. Each guest now gets a short deadline
 * and the answer carries what arrived in time.
 * L11: the CPU samples of removed containers were never dropped.
 */
test('M4: one silent guest does not hold the node\'s stats', async () => {
  const pods = await podSetup();
  try {
    const healthy = await pods.sandbox();
    const silent = await pods.sandbox();
    const ok = await pods.runningContainer(healthy.record.id, 'ok');
    await pods.runningContainer(silent.record.id, 'stuck');
    silent.guest.statsDelayMs = 60_000;
    const stats = new StatsService(pods.ctx, 300);
    // Had the list waited for the silent guest (60 s), its container would be in it.
    const list = await stats.listContainerStats({});
    assert.deepEqual(list.map((v) => v.container.id), [ok.id]);
    // Pod stats come from each guest's pod cgroup: the silent guest's pod is left out, not waited for.
    const pods2 = await stats.listSandboxStats({});
    assert.deepEqual(pods2.map((v) => v.sandbox.id), [healthy.record.id]);
  } finally {
    await pods.cleanup();
  }
});

test('M4: stats of one container or one pod wait for that guest alone, and a silent one is UNAVAILABLE', async () => {
  const pods = await podSetup();
  try {
    const { record, guest } = await pods.sandbox();
    const c = await pods.runningContainer(record.id, 'slow');
    // Slower than the node-wide lists' bound, inside the one-pod bound: a one-pod call still gets its sample.
    guest.statsDelayMs = 600;
    const stats = new StatsService(pods.ctx, 300, 2_000);
    assert.equal((await stats.containerStats(c.id)).container.id, c.id);
    assert.equal((await stats.sandboxStats(record.id)).sandbox.id, record.id);
    // A guest that answered after 60 s would give a sample, not these errors: they show the bound ended the wait.
    guest.statsDelayMs = 60_000;
    await assert.rejects(stats.containerStats(c.id), (e: { code?: string; message: string }) =>
      e.code === 'UNAVAILABLE' && /did not answer within 2000 ms/.test(e.message));
    await assert.rejects(stats.sandboxStats(record.id), (e: { code?: string; message: string }) =>
      e.code === 'UNAVAILABLE' && /did not report its stats within 2000 ms/.test(e.message));
  } finally {
    await pods.cleanup();
  }
});

test('L11: CPU samples of removed containers are dropped', async () => {
  const pods = await podSetup();
  try {
    const { record } = await pods.sandbox();
    const c = await pods.runningContainer(record.id, 'a');
    const stats = new StatsService(pods.ctx);
    await stats.listContainerStats({});
    assert.equal(stats.trackedSamples, 1);
    await pods.containers.forget(c, false);
    await stats.listContainerStats({});
    assert.equal(stats.trackedSamples, 0);
  } finally {
    await pods.cleanup();
  }
});
