/**
 * How soon the agent reports a process's exit, measured on the host from the ExecProcess call
 * to the exit event: an exec whose output pipes close with it (the baseline) against one that
 * leaves a background `sleep` holding its stdout (agent/process.ts then cannot wait for the
 * pipes to close). The difference is what a held pipe costs each exit.
 *
 *   node --import tsx bench/process-exit.ts [--rounds 10]
 */
import { parseArgs } from 'node:util';
import type { AgentClient } from '../src/agent-client/index.js';
import { bootGuest, busyboxRootfsDisk, busyboxSpec } from '../test/helpers/guest.js';
import { median } from './figures.js';

const SCRIPTS = {
  closes: 'echo done',
  held: 'echo done; sleep 100 &',
} as const;

/** Milliseconds from ExecProcess to its exit event, with the output checked complete. */
async function execToExit(agent: AgentClient, execId: string, script: string): Promise<number> {
  let stdout = '';
  let exited!: () => void;
  const exit = new Promise<void>((resolve) => { exited = resolve; });
  const onOutput = (o: { containerId: string; execId: string; data: Uint8Array }) => { if (o.execId === execId) stdout += Buffer.from(o.data).toString(); };
  const onExit = (e: { containerId: string; execId: string }) => { if (e.execId === execId) exited(); };
  agent.on('output', onOutput);
  agent.on('exit', onExit);
  try {
    const t = process.hrtime.bigint();
    await agent.execProcess({ containerId: 'bench-exit', execId, args: ['sh', '-c', script] });
    await exit;
    const ms = Number(process.hrtime.bigint() - t) / 1e6;
    if (stdout !== 'done\n') throw new Error(`exec ${execId} printed ${JSON.stringify(stdout)}, not "done"`);
    return ms;
  } finally {
    agent.off('output', onOutput);
    agent.off('exit', onExit);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '10' } } });
  const rounds = Number(values.rounds);
  const disk = busyboxRootfsDisk();
  const guest = await bootGuest({}, { deadlineMs: 400_000 });
  try {
    const { agent } = guest;
    const plugged = await guest.vm.hotplugDisk({ id: 'bench-busybox', path: disk.path, readOnly: true });
    const image = '/run/podvisor/images/bench-busybox';
    await agent.mountDisk({ serial: plugged.serial, mountPoint: image });
    const root = '/run/podvisor/rootfs/bench-exit';
    await agent.mountOverlay({ lowerDirs: [image], target: root });
    await agent.createContainer({ containerId: 'bench-exit', ociSpecJson: busyboxSpec(root, ['sh', '-c', 'while :; do sleep 1; done']) });
    await agent.startContainer('bench-exit');
    const times: Record<keyof typeof SCRIPTS, number[]> = { closes: [], held: [] };
    await execToExit(agent, 'warm-up', SCRIPTS.closes);
    // Interleaved, so load on the machine falls on both alike.
    for (let i = 0; i < rounds; i++) {
      for (const kind of Object.keys(SCRIPTS) as Array<keyof typeof SCRIPTS>) times[kind].push(await execToExit(agent, `${kind}-${i}`, SCRIPTS[kind]));
    }
    const closes = median(times.closes);
    const held = median(times.held);
    console.log(`exec exit reported, pipes close with it: median ${closes.toFixed(0)} ms (${rounds} runs)`);
    console.log(`exec exit reported, a background sleep holds stdout: median ${held.toFixed(0)} ms (${rounds} runs)`);
    console.log(`cost of the held pipe: ${(held - closes).toFixed(0)} ms per exit (ratio ${(held / closes).toFixed(2)})`);
    await agent.deleteContainer({ containerId: 'bench-exit', force: true });
  } finally {
    await guest.stop();
    disk.remove();
  }
}
