/**
 * Boot speed of the guest under this host's accelerator (TCG here):
 *  - agent-ready: Vm.launch until the agent answers Health (median of N boots),
 *    with the guest's own uptime at that moment;
 *  - bare: the same kernel and initramfs with `podvisor.bare=1`, where /init
 *    prints its marker and powers off at once: launch until QEMU exits;
 *  - their ratio, then the channel figures (bench/agent-channel.ts) on one guest.
 *
 *   node --import tsx bench/boot.ts [--boots 5] [--calls 300] [--mib 32] [--no-channel]
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { AgentClient } from '../src/agent-client/index.js';
import { withProfileDefaults } from '../src/vm/profile.js';
import { Vm } from '../src/vm/vm.js';
import { bootGuest, ensureGuestImage } from '../test/helpers/guest.js';
import { measureChannel, median, printChannel } from './agent-channel.js';

const { values } = parseArgs({
  options: {
    boots: { type: 'string', default: '5' },
    calls: { type: 'string', default: '300' },
    mib: { type: 'string', default: '32' },
    'no-channel': { type: 'boolean', default: false },
  },
});
const boots = Number(values.boots);
const image = ensureGuestImage();
const profile = (kernelArgs: string[] = []) =>
  withProfileDefaults({ kernel: image.kernel, initrd: image.initrd, systemDisk: image.systemDisk, accel: 'auto', memoryMiB: 512, kernelArgs });

/** Seconds of guest uptime printed by /init's marker line. */
function initMarker(consoleLog: string): number | undefined {
  const m = /podvisor-init: reached \/init at ([\d.]+)s/.exec(consoleLog);
  return m ? Number(m[1]) : undefined;
}

async function agentReadyBoot(i: number): Promise<{ ms: number; guestUptime: number; init?: number }> {
  const runDir = mkdtempSync('/tmp/podvisor-bench-');
  const t = performance.now();
  const vm = await Vm.launch({ id: `bench-boot-${process.pid}-${i}`, runDir, profile: profile() });
  try {
    const agent = await AgentClient.connect(vm.agentSocket, { deadlineMs: 120_000 });
    const ms = performance.now() - t;
    const health = await agent.health();
    const init = initMarker(readFileSync(vm.paths.consoleLog, 'utf8'));
    await vm.destroy({ graceful: () => agent.shutdown(), timeoutMs: 10_000 });
    agent.close();
    return { ms, guestUptime: health.uptimeSeconds, init };
  } catch (err) {
    await vm.destroy({ timeoutMs: 5000 }).catch(() => undefined);
    throw err;
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
}

async function bareBoot(i: number): Promise<{ ms: number; init?: number }> {
  const runDir = mkdtempSync('/tmp/podvisor-bench-');
  const t = performance.now();
  const vm = await Vm.launch({ id: `bench-bare-${process.pid}-${i}`, runDir, profile: profile(['podvisor.bare=1']) });
  try {
    const info = await Promise.race([vm.waitExit(), new Promise<never>((_, reject) => setTimeout(() => reject(new Error('bare boot did not power off in 60 s')), 60_000))]);
    const ms = performance.now() - t;
    if (info.reason !== 'guest-shutdown') throw new Error(`bare boot ended with ${info.reason}: ${info.detail}`);
    return { ms, init: initMarker(readFileSync(vm.paths.consoleLog, 'utf8')) };
  } finally {
    await vm.destroy({ timeoutMs: 5000 }).catch(() => undefined);
    rmSync(runDir, { recursive: true, force: true });
  }
}

const fmt = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const ready: Awaited<ReturnType<typeof agentReadyBoot>>[] = [];
const bare: Awaited<ReturnType<typeof bareBoot>>[] = [];
for (let i = 0; i < boots; i++) {
  bare.push(await bareBoot(i));
  ready.push(await agentReadyBoot(i));
  console.log(`boot ${i + 1}/${boots}: bare ${fmt(bare[i].ms)} (/init at ${bare[i].init}s guest time), agent-ready ${fmt(ready[i].ms)} (guest uptime ${ready[i].guestUptime}s)`);
}
const readyMedian = median(ready.map((r) => r.ms));
const bareMedian = median(bare.map((b) => b.ms));
console.log(`\nguest image ${image.manifest.hash} (kernel ${image.manifest.kernelVersion}, node ${image.manifest.nodeVersion})`);
console.log(`agent-ready (launch -> Health answered): median ${fmt(readyMedian)} of ${boots}; guest uptime at ready: median ${median(ready.map((r) => r.guestUptime)).toFixed(2)} s`);
console.log(`bare boot (launch -> /init -> power off): median ${fmt(bareMedian)}; /init reached at median ${median(bare.map((b) => b.init ?? NaN)).toFixed(2)} s guest time`);
console.log(`ratio agent-ready / bare: ${(readyMedian / bareMedian).toFixed(2)}`);

if (!values['no-channel']) {
  const guest = await bootGuest();
  try {
    printChannel(await measureChannel(guest, { calls: Number(values.calls), mib: Number(values.mib) }));
  } finally {
    await guest.stop();
  }
}
