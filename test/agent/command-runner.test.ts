import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runThroughRunner } from '../../agent/command-runner.js';

// The guest's command runner (images/guest/command-runner.c), compiled here as the image build
// compiles it and run on the host: the agent's side of the protocol against the real program.
// That the guest starts it and the agent's commands go through it: channel.test.ts.

const repo = resolve(fileURLToPath(new URL('../..', import.meta.url)));
let dir: string;
let socket: string;
let runner: ChildProcess;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'podvisor-runner-'));
  socket = join(dir, 'runner.sock');
  execFileSync('gcc', ['-static', '-Os', '-Wall', '-o', join(dir, 'podvisor-runner'), join(repo, 'images/guest/command-runner.c')]);
  runner = spawn(join(dir, 'podvisor-runner'), [socket], { stdio: 'inherit' });
  const deadline = Date.now() + 10_000;
  while (!existsSync(socket)) {
    if (Date.now() > deadline) throw new Error('podvisor-runner did not make its socket');
    await new Promise((r) => setTimeout(r, 20));
  }
});

after(() => {
  runner?.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

test('the socket is for root only', () => {
  assert.equal(statSync(socket).mode & 0o777, 0o600);
});

test('a command\'s exit status, stdout and stderr come back apart', async () => {
  assert.deepEqual(await runThroughRunner(['sh', '-c', 'echo out; echo err >&2; exit 3'], '', socket), { kind: 'exited', code: 3, stdout: 'out\n', stderr: 'err\n' });
  assert.deepEqual(await runThroughRunner(['echo', 'two words', "it's"], '', socket), { kind: 'exited', code: 0, stdout: "two words it's\n", stderr: '' });
});

test('stdin reaches the command; a command that ignores it still ends', async () => {
  assert.deepEqual(await runThroughRunner(['cat'], 'seed bytes', socket), { kind: 'exited', code: 0, stdout: 'seed bytes', stderr: '' });
  assert.equal((await runThroughRunner(['true'], 'x'.repeat(50_000), socket))?.kind, 'exited');
});

test('a signal and a missing program are told apart from an exit', async () => {
  assert.deepEqual(await runThroughRunner(['sh', '-c', 'kill -9 $$'], '', socket), { kind: 'signalled', signal: 9, stdout: '', stderr: '' });
  assert.deepEqual(await runThroughRunner(['/nonexistent/program'], '', socket), { kind: 'not-started', errno: 2 });
});

test('output past the bound is dropped, and the command is not blocked by it', async () => {
  const r = await runThroughRunner(['sh', '-c', 'head -c 3000000 /dev/zero; echo done >&2'], '', socket);
  assert.equal(r?.kind, 'exited');
  assert.equal(r && 'stdout' in r ? r.stdout.length : -1, 1024 * 1024);
  assert.equal(r && 'stderr' in r ? r.stderr : '', 'done\n');
});

test('commands run at once, each on its own connection', async () => {
  const results = await Promise.all(Array.from({ length: 40 }, (_, i) => runThroughRunner(['sh', '-c', `echo ${i}`], '', socket)));
  assert.deepEqual(results.map((r) => (r && 'stdout' in r ? r.stdout : '')), Array.from({ length: 40 }, (_, i) => `${i}\n`));
});

test('no runner: undefined, so the agent starts the command itself; what the runner cannot carry is not sent', async () => {
  assert.equal(await runThroughRunner(['true'], '', join(dir, 'absent.sock')), undefined);
  assert.equal(await runThroughRunner(['echo', 'a\0b'], '', socket), undefined);
  assert.equal(await runThroughRunner(['cat'], 'x'.repeat(70_000), socket), undefined);
});
