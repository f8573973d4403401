import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import { killLeftoverVms, startDaemon, unary, type RunningDaemon } from '../helpers/daemon.js';
import { sandboxConfig } from '../helpers/cri.js';

/**
 * Many RunPodSandbox calls at once through the real CRI socket: all succeed, and no more
 * VMs boot at once than `[vm] max_parallel_launches` allows. "Booting" is seen from outside:
 * a QEMU of this daemon whose sandbox has not yet logged "launch slot released" (given back
 * once its agent answered, before the guest's own set-up) nor is listed by ListPodSandbox.
 * A caller whose deadline passes while it waits gets DEADLINE_EXCEEDED and leaves nothing.
 */
const LIMIT = 2;
const CALLS = 4;

describe('concurrent RunPodSandbox with bounded VM launches', () => {
  let daemon: RunningDaemon;
  const rt = () => daemon.client.runtime;
  const vmsDir = () => join(daemon.state, 'vms');

  /** Sandbox ids (run directory names) of this daemon's live QEMUs. */
  function liveQemuIds(): string[] {
    const ids: string[] = [];
    for (const pid of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
      try {
        const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        if (!/qemu-system/.test(argv[0] ?? '')) continue;
        const qmp = argv.find((a) => a.includes(vmsDir()));
        const m = qmp && new RegExp(`${vmsDir()}/([0-9a-f]+)/`).exec(qmp);
        if (m) ids.push(m[1]!);
      } catch {
        /* exited while we looked */
      }
    }
    return [...new Set(ids)];
  }

  before(async () => {
    daemon = await startDaemon({
      config: `[vm]\nmax_parallel_launches = ${LIMIT}\n[daemon]\nboot_timeout_seconds = 900\n`,
      logLevel: 'info',
      startTimeoutMs: 180_000,
    });
  });

  after(async () => {
    try {
      const { items } = await unary(rt(), 'ListPodSandbox', {});
      for (const s of items) await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: s.id });
    } finally {
      // Pods outlive podvisord on purpose: whatever a failed test left is killed before the folder goes.
      await daemon.stop();
      killLeftoverVms(vmsDir());
      await daemon.dispose();
    }
  });

  test(`${CALLS} calls at once all succeed, at most ${LIMIT} VMs boot at a time, a caller past its deadline leaves nothing`, async () => {
    let peakBooting = 0;
    let peakQemus = 0;
    let samples = 0;
    let polling = true;
    const poller = (async () => {
      while (polling) {
        // /proc first, then the log and the list: a VM that finishes booting in between is not counted as booting.
        const qemus = liveQemuIds();
        const booted = new Set(daemon.output().split('\n').filter((l) => l.includes('launch slot released')).map((l) => (JSON.parse(l) as { sandbox: string }).sandbox));
        const ready = new Set((await unary(rt(), 'ListPodSandbox', {})).items.map((s) => s.id));
        peakBooting = Math.max(peakBooting, qemus.filter((id) => !ready.has(id) && !booted.has(id)).length);
        peakQemus = Math.max(peakQemus, qemus.length);
        samples++;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    const calls = Array.from({ length: CALLS }, (_, i) =>
      unary(rt(), 'RunPodSandbox', { config: sandboxConfig(`many-${i}`, join(daemon.dir, 'logs', `many-${i}`)) }));
    // One more caller that gives up after 2 s: on this host it is still waiting behind the others.
    const late = new Promise<{ id?: string; err?: ServiceError }>((resolve) => {
      rt().RunPodSandbox({ config: sandboxConfig('late', join(daemon.dir, 'logs', 'late')) }, { deadline: Date.now() + 2000 },
        (err, res) => resolve(err ? { err } : { id: res!.pod_sandbox_id }));
    });
    const results = await Promise.allSettled(calls);
    const lateResult = await late;
    polling = false;
    await poller;

    const failures = results.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as ServiceError).details ?? r.reason)] : []));
    assert.deepEqual(failures, [], 'every RunPodSandbox succeeded');
    const ids = results.map((r) => (r as PromiseFulfilledResult<{ pod_sandbox_id: string }>).value.pod_sandbox_id);
    assert.equal(new Set(ids).size, CALLS);
    assert.ok(samples > 0 && peakBooting >= 1, `the poller saw the boots (${samples} samples)`);
    assert.ok(peakBooting <= LIMIT, `at most ${LIMIT} VMs booted at once; saw ${peakBooting}`);

    // The late caller either made it (a fast host) or got DEADLINE_EXCEEDED; in both cases the daemon holds exactly what it answered.
    const listed = (await unary(rt(), 'ListPodSandbox', {})).items.map((s) => s.id).sort();
    if (lateResult.err) {
      assert.equal(lateResult.err.code, grpcStatus.DEADLINE_EXCEEDED, lateResult.err.details);
      assert.ok(peakQemus <= CALLS, `the late call never started a VM it did not keep (saw ${peakQemus} QEMUs)`);
      assert.deepEqual(listed, [...ids].sort());
      // Its name was given back: the same pod can be started again.
      const again = await unary(rt(), 'RunPodSandbox', { config: sandboxConfig('late', join(daemon.dir, 'logs', 'late')) });
      ids.push(again.pod_sandbox_id);
    } else {
      ids.push(lateResult.id!);
    }
    const finalList = (await unary(rt(), 'ListPodSandbox', {})).items.map((s) => s.id).sort();
    assert.deepEqual(finalList, [...ids].sort());
    assert.deepEqual(liveQemuIds().sort(), [...ids].sort(), 'one QEMU per sandbox, none left over');

    for (const id of ids) await unary(rt(), 'RemovePodSandbox', { pod_sandbox_id: id });
    assert.deepEqual(liveQemuIds(), [], 'no QEMU left after removal');
  });
});
