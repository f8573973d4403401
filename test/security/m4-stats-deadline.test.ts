import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StatsService } from '../../src/pod/stats-service.js';
import { podSetup } from './pod-setup.js';

/**
 * M4 (security review 2026-12-01): stats fanned out to every guest and waited
 * for the slowest (up to 60 s), so one guest stalled ListContainerStats and
 * ListPodSandboxStats for the whole node, and every call sent it one more
 * request. Each guest now gets a short deadline for a list; one that misses it
 * is answered for with its last sample (marked stale), a container it never
 * sampled is listed with no usage, and calls share the one request still out.
 * L11: the samples of removed containers were never dropped.
 */
test('M4: one silent guest does not hold the node\'s stats; it is answered for with its last sample', async () => {
  const pods = await podSetup();
  try {
    const healthy = await pods.sandbox();
    const silent = await pods.sandbox();
    const ok = await pods.runningContainer(healthy.record.id, 'ok');
    const stuck = await pods.runningContainer(silent.record.id, 'stuck');
    const stats = new StatsService(pods.ctx, 300);
    // Both guests answer: every container and pod has a sample.
    const before = await stats.listSandboxStats({});
    const silentBefore = before.find((v) => v.sandbox.id === silent.record.id)!;
    silent.guest.statsDelayMs = 60_000;
    const callsBefore = silent.guest.statsCalls;
    const t0 = Date.now();
    const list = await stats.listContainerStats({});
    assert.deepEqual(list.map((v) => v.container.id), [ok.id, stuck.id]);
    assert.equal(list[0]!.stale, undefined);
    assert.ok(list[0]!.stats!.timestampMs >= t0, 'the healthy guest\'s sample is fresh');
    assert.equal(list[1]!.stale, true);
    assert.equal(list[1]!.stats, silentBefore.containers[0]!.stats, 'the silent guest\'s sample is its last one, with its own time');

    // A container the silent guest has never sampled is listed, with no usage.
    const unsampled = await pods.runningContainer(silent.record.id, 'new');
    const list2 = await stats.listContainerStats({});
    const entry = list2.find((v) => v.container.id === unsampled.id);
    assert.ok(entry, 'a running container is in the list although its guest is silent');
    assert.equal(entry.stats, undefined);

    // Pods: the silent guest's pod is listed with its last pod sample, not waited for.
    const pods2 = await stats.listSandboxStats({});
    assert.deepEqual(pods2.map((v) => [v.sandbox.id, v.stale]), [[healthy.record.id, undefined], [silent.record.id, true]]);
    assert.equal(pods2[1]!.guest, silentBefore.guest);
    // Three list calls sent the silent guest one containers request and one pod request in all.
    assert.equal(silent.guest.statsCalls - callsBefore, 2);
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
