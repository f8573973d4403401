// A TCP client for bench/pod-network.ts, run on the host or inside a network namespace
// (nsenter --net=… node --import tsx bench/net-probe.ts …), printing one JSON line.
//
//   rtt HOST PORT COUNT      1-byte request/echo round trips against an echo server; median and p90 in ms
//   send HOST PORT BYTES     stream BYTES to a sink until it closes the connection; MB/s
import { connect } from 'node:net';

const [mode, host, portArg, nArg] = process.argv.slice(2);
const port = Number(portArg);
const n = Number(nArg);

function open(): Promise<ReturnType<typeof connect>> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: host!, port, noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

if (mode === 'rtt') {
  const s = await open();
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await new Promise<void>((resolve) => {
      s.once('data', () => resolve());
      s.write('x');
    });
    times.push(performance.now() - t);
  }
  s.destroy();
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({ medianMs: times[Math.floor(n / 2)], p90Ms: times[Math.floor(n * 0.9)] }));
} else if (mode === 'send') {
  const s = await open();
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  const t = performance.now();
  let sent = 0;
  while (sent < n) {
    const ok = s.write(chunk);
    sent += chunk.length;
    if (!ok) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  await new Promise((r) => s.once('close', r));
  console.log(JSON.stringify({ mbPerS: sent / 1e6 / ((performance.now() - t) / 1000) }));
} else {
  console.error('usage: net-probe.ts rtt|send HOST PORT N');
  process.exit(2);
}
