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
import { parseArgs } from 'node:util';
import { withProfileDefaults } from '../src/vm/profile.js';
import { bootGuest, ensureGuestImage } from '../test/helpers/guest.js';
import { measureChannel, median, printChannel } from './agent-channel.js';
import { bareBootToInit, bootToAgentReady, type AgentReadyBoot, type BareInitBoot } from './bare-boot.js';

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
const profile = withProfileDefaults({ kernel: image.kernel, initrd: image.initrd, systemDisk: image.systemDisk, accel: 'auto', memoryMiB: 512, kernelArgs: [] });

const fmt = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const ready: AgentReadyBoot[] = [];
const bare: BareInitBoot[] = [];
for (let i = 0; i < boots; i++) {
  bare.push(await bareBootToInit(profile, `${i}`));
  ready.push(await bootToAgentReady(profile, `${i}`));
  console.log(`boot ${i + 1}/${boots}: bare ${fmt(bare[i]!.ms)} (/init at ${bare[i]!.initAt}s guest time), agent-ready ${fmt(ready[i]!.ms)} (guest uptime ${ready[i]!.guestUptime}s)`);
}
const readyMedian = median(ready.map((r) => r.ms));
const bareMedian = median(bare.map((b) => b.ms));
console.log(`\nguest image ${image.manifest.hash} (kernel ${image.manifest.kernelVersion}, node ${image.manifest.nodeVersion})`);
console.log(`agent-ready (launch -> Health answered): median ${fmt(readyMedian)} of ${boots}; guest uptime at ready: median ${median(ready.map((r) => r.guestUptime)).toFixed(2)} s`);
console.log(`bare boot (launch -> /init -> power off): median ${fmt(bareMedian)}; /init reached at median ${median(bare.map((b) => b.initAt ?? NaN)).toFixed(2)} s guest time`);
console.log(`ratio agent-ready / bare: ${(readyMedian / bareMedian).toFixed(2)}`);

if (!values['no-channel']) {
  const guest = await bootGuest();
  try {
    printChannel(await measureChannel(guest, { calls: Number(values.calls), mib: Number(values.mib) }));
  } finally {
    await guest.stop();
  }
}
