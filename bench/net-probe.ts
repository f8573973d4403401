// A TCP client for bench/pod-network.ts, run on the host or inside a network namespace
// (nsenter --net=… node --import tsx bench/net-probe.ts …), printing one JSON line.
//
//   rtt HOST PORT COUNT      1-byte request/echo round trips against an echo server; median and p90 in ms
//   send HOST PORT BYTES     a length-prefixed upload: the line "BYTES\n", then BYTES bytes (a multiple
//                            of 64 KiB); the sink answers "ok" once it has read them all, and the time
//                            to that answer gives MB/s
//
// The sink is busybox (bench/pod-network.ts's SINK, the same in the pod and in the plain namespace), so the end
// of the upload is said by its length, not by a half-close that busybox nc does not pass on. Every
// probe has a deadline: a server that never answers fails the run instead of hanging it.
import { connect, type Socket } from 'node:net';

const [mode, host, portArg, nArg] = process.argv.slice(2);
const port = Number(portArg);
const n = Number(nArg);
const DEADLINE_MS = 180_000;
/** The sink reads whole blocks of this size (bench/pod-network.ts's SINK). */
const SINK_BLOCK = 64 * 1024;

setTimeout(() => {
  console.error(`net-probe ${mode} ${host}:${port}: no answer within ${DEADLINE_MS / 1000} s`);
  process.exit(1);
}, DEADLINE_MS).unref();

function open(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: host!, port, noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves once `s` has delivered `bytes` more bytes (or rejects when it closes first). */
function receive(s: Socket, bytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (d: Buffer) => {
      got += d.length;
      if (got >= bytes) done(undefined);
    };
    const onClose = () => done(new Error(`connection closed after ${got} of ${bytes} bytes`));
    const done = (err: Error | undefined) => {
      s.off('data', onData);
      s.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    s.on('data', onData);
    s.once('close', onClose);
  });
}

if (mode === 'rtt') {
  const s = await open();
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const echoed = receive(s, 1);
    s.write('x');
    await echoed;
    times.push(performance.now() - t);
  }
  s.destroy();
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({ medianMs: times[Math.floor(n / 2)], p90Ms: times[Math.floor(n * 0.9)] }));
} else if (mode === 'send') {
  if (n % SINK_BLOCK !== 0) throw new Error(`send: BYTES must be a multiple of ${SINK_BLOCK}`);
  const s = await open();
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  const acked = receive(s, 'ok\n'.length);
  const t = performance.now();
  s.write(`${n}\n`);
  for (let sent = 0; sent < n; ) {
    const part = n - sent >= chunk.length ? chunk : chunk.subarray(0, n - sent);
    sent += part.length;
    if (!s.write(part)) await new Promise((r) => s.once('drain', r));
  }
  await acked;
  const seconds = (performance.now() - t) / 1000;
  s.destroy();
  console.log(JSON.stringify({ mbPerS: n / 1e6 / seconds }));
} else {
  console.error('usage: net-probe.ts rtt|send HOST PORT N');
  process.exit(2);
}
