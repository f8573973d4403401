import assert from 'node:assert/strict';
import { once } from 'node:events';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseSubIdRange, QemuUsers } from '../../src/vm/confinement.js';
import { ConsoleLog } from '../../src/vm/console-log.js';
import { capLogFile } from '../../src/vm/log-cap.js';
import { consoleTail, runDirPaths, tail } from '../../src/vm/run-dir.js';

/**
 * The host files a guest can make grow, each on its own: the console ring fed through a
 * real unix socket (as QEMU serves it), the bounded tail reads, the qemu.log cap; and the
 * per-VM uid range. The whole path with a real guest is in hardening.test.ts.
 */

const dir = mkdtempSync('/tmp/podvisor-bounded-');
after(() => rmSync(dir, { recursive: true, force: true }));

describe('console ring', () => {
  it('keeps at most its cap over two files, the newest output last, across a reconnect', async () => {
    const paths = runDirPaths(join(dir, 'ring'));
    const { mkdirSync } = await import('node:fs');
    mkdirSync(paths.dir);
    const cap = 256 * 1024;
    // The console reader's peer, handed to the feed that connected (not whichever connection came last).
    let accepted: (s: Socket) => void = () => undefined;
    const server = createServer((s) => accepted(s));
    await new Promise<void>((r) => server.listen(paths.consoleSocket, r));
    const feed = async (bytes: number, fill: string) => {
      const peerAccepted = new Promise<Socket>((r) => (accepted = r));
      const c = await ConsoleLog.connect(paths.consoleSocket, paths.consoleLog, paths.consoleLogOld, cap);
      const peer = await peerAccepted;
      const chunk = Buffer.alloc(64 * 1024, fill);
      for (let sent = 0; sent < bytes; sent += chunk.length) {
        if (!peer.write(chunk)) await new Promise((r) => peer.once('drain', r));
      }
      // The reader closes its end once it has read everything up to our end: then all of it is on disk.
      const readToTheEnd = once(peer, 'close');
      peer.end();
      await readToTheEnd;
      c.close();
      return c;
    };
    await feed(10 * 1024 * 1024, 'a');
    const onDisk = () => statSync(paths.consoleLog).size + statSync(paths.consoleLogOld).size;
    assert.ok(onDisk() <= cap, `${onDisk()} bytes kept, cap ${cap}`);
    assert.ok(onDisk() >= cap / 2);
    // A daemon that reconnects (reattach) continues the same ring.
    await feed(100 * 1024, 'b');
    assert.ok(onDisk() <= cap);
    assert.match(consoleTail(paths, 1000), /b{900}$/);
    server.close();
  });
});

describe('bounded reads and caps', () => {
  it('tail reads the end of a 1 GiB file without reading the file', () => {
    const big = join(dir, 'sparse.log');
    writeFileSync(big, '');
    truncateSync(big, 1024 ** 3);
    appendFileSync(big, 'first line\nlast line\n');
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    assert.equal(tail(big, 10), 'last line');
    const ms = performance.now() - t0;
    const grew = process.memoryUsage().rss - rss0;
    assert.ok(grew < 64 * 1024 * 1024, `RSS grew by ${grew} bytes`);
    console.log(`# tail of a 1 GiB file: ${ms.toFixed(2)} ms, RSS +${Math.round(grew / 1024)} KiB`);
  });

  it('caps a log that another process appends to, keeping its end', () => {
    const log = join(dir, 'qemu.log');
    writeFileSync(log, 'x'.repeat(3 * 1024 * 1024) + 'the end\n');
    assert.equal(capLogFile(log, 1024 * 1024, 4096), true);
    const text = readFileSync(log, 'utf8');
    assert.ok(text.length < 4096 + 200);
    assert.match(text, /^\[podvisor: \d+ earlier bytes dropped; this log is kept under 1048576 bytes\]\n/);
    assert.match(text, /the end\n$/);
    assert.equal(capLogFile(log, 1024 * 1024, 4096), false, 'under the cap: untouched');
  });
});

describe('per-VM QEMU uids', () => {
  it('reads the QEMU user\'s range from /etc/subuid syntax', () => {
    assert.deepEqual(parseSubIdRange('alice:100000:65536\npodvisor-qemu:1100000:65536\n', 'podvisor-qemu'), { start: 1100000, count: 65536 });
    assert.equal(parseSubIdRange('alice:100000:65536\n', 'podvisor-qemu'), undefined);
  });

  it('gives each sandbox its own uid and refuses without a range, saying how to fix it', () => {
    const sub = join(dir, 'subid');
    writeFileSync(sub, 'pvq:2000000:4\n');
    const users = new QemuUsers('pvq', { subuid: sub, subgid: sub });
    const ids = ['a', 'b', 'c', 'd'].map((id) => users.allocate(id).uid);
    assert.equal(new Set(ids).size, 4);
    assert.ok(ids.every((u) => u >= 2000000 && u < 2000004));
    assert.throws(() => users.allocate('e'), { code: 'FAILED_PRECONDITION', message: /all 4 QEMU uids/ });
    users.release(ids[0]!);
    assert.equal(users.allocate('e').uid, ids[0]);
    const none = new QemuUsers('nobody-here', { subuid: sub, subgid: sub });
    assert.throws(() => none.allocate('x'), { code: 'FAILED_PRECONDITION', message: /run hack\/install-deps/ });
  });
});
