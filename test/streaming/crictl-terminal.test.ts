import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import { unary } from '../helpers/daemon.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import { containerConfig, containerState, sandboxConfig, waitContainerState, waitFor } from '../helpers/cri.js';

// crictl is not packaged for Debian 12; it is built from kubernetes-sigs/cri-tools for testing and
// never shipped here. tmux gives it a real terminal (a pty it can make raw, resize, type into).
const which = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
const crictlPath = which('crictl');
const skip = (!crictlPath && 'crictl is not on PATH (build it from kubernetes-sigs/cri-tools to run these)')
  || (!which('tmux') && 'tmux is not installed (apt-get install tmux)');

/**
 * `crictl exec -it`, `crictl attach -it` and `crictl port-forward` as an
 * operator uses them: crictl runs in a tmux pane (a real terminal), the test
 * types into it with send-keys and reads the screen with capture-pane, resizes
 * the window, and connects to the forwarded local port. Real podvisord, real
 * VM, crictl's own SPDY client (client-go's).
 */
describe('crictl from a terminal: exec -it, attach -it, port-forward', { skip }, () => {
  let env: PodTestEnv;
  let sandboxId: string;
  let shell: string;
  let tmuxSocket: string;
  const rt = () => env.daemon.client.runtime;

  const tmux = (...args: string[]) => execFileSync('tmux', ['-S', tmuxSocket, ...args], { encoding: 'utf8' });
  const crictl = (args: string) => {
    const endpoint = `unix://${env.daemon.socket}`;
    // The pane keeps the exit status on screen after crictl ends (remain-on-exit shows the rest).
    return `${crictlPath} --runtime-endpoint ${endpoint} --image-endpoint ${endpoint} --timeout 300s ${args}; echo crictl-exit=$?`;
  };
  const screen = (window: string) => tmux('capture-pane', '-p', '-J', '-S', '-500', '-t', `pv:${window}`);
  const waitScreen = (window: string, pattern: RegExp, timeoutMs = 120_000) =>
    waitFor(`${pattern} in the ${window} pane`, async () => (pattern.test(screen(window)) ? true : undefined), timeoutMs)
      .catch((e) => { throw new Error(`${(e as Error).message}; the pane shows:\n${screen(window)}`); });
  const type = (window: string, text: string) => {
    tmux('send-keys', '-t', `pv:${window}`, '-l', text);
    tmux('send-keys', '-t', `pv:${window}`, 'Enter');
  };
  /** Types a command and sees its answer, then resizes the window and sees the shell's terminal take the new size. */
  const shellAnswersAndFollowsResize = async (window: string, size: { cols: number; rows: number }) => {
    type(window, `echo ${window}-typed-$((6*7))`);
    await waitScreen(window, new RegExp(`${window}-typed-42`));
    tmux('resize-window', '-t', `pv:${window}`, '-x', String(size.cols), '-y', String(size.rows));
    type(window, 'stty size');
    await waitScreen(window, new RegExp(`^${size.rows} ${size.cols}$`, 'm'));
  };
  const create = async (name: string, command: string[], extra: Record<string, unknown> = {}) => {
    const cfg = sandboxConfig('crictl-term', join(env.dir, 'logs'));
    const id = (await unary(rt(), 'CreateContainer', { pod_sandbox_id: sandboxId, config: containerConfig(name, env.busybox, command, extra), sandbox_config: cfg })).container_id;
    await unary(rt(), 'StartContainer', { container_id: id });
    return id;
  };

  before(async () => {
    env = await startPodTestEnv({ startTimeoutMs: 300_000 }, '[daemon]\nboot_timeout_seconds = 900\n');
    await env.pull(env.busybox);
    sandboxId = (await unary(rt(), 'RunPodSandbox', { config: sandboxConfig('crictl-term', join(env.dir, 'logs')) })).pod_sandbox_id;
    // An echo server on the pod VM's loopback only: crictl port-forward must reach it through the agent.
    shell = await create('shell', ['sh', '-c', 'nc -ll -p 9000 -e cat & while true; do sleep 1; done']);
    tmuxSocket = join(env.dir, 'tmux.sock');
    // A detached tmux server of our own (its own socket, no user config), fixed size, no status line.
    execFileSync('tmux', ['-S', tmuxSocket, '-f', '/dev/null', 'new-session', '-d', '-s', 'pv', '-x', '120', '-y', '40']);
    tmux('set-option', '-g', 'status', 'off');
    tmux('set-option', '-g', 'remain-on-exit', 'on');
  });

  after(async () => {
    if (tmuxSocket) spawnSync('tmux', ['-S', tmuxSocket, 'kill-server']);
    await env?.dispose();
  });

  test('crictl exec -it: prompt, typing, resize followed by the shell, exit code reported', async () => {
    tmux('new-window', '-t', 'pv', '-n', 'exec', crictl(`exec -it ${shell} sh`));
    await waitScreen('exec', /\/ # /);
    await shellAnswersAndFollowsResize('exec', { cols: 100, rows: 30 });
    type('exec', 'exit 3');
    const shown = await waitFor('crictl to end', async () => /crictl-exit=(\d+)/.exec(screen('exec'))?.[1]);
    // crictl turns the remote exit code into its own failure exit, naming the code.
    assert.notEqual(shown, '0');
    assert.match(screen('exec'), /exit code 3/);
    // The exec's shell is gone from the container.
    const ps = (await unary(rt(), 'ExecSync', { container_id: shell, cmd: ['ps', '-o', 'args'], timeout: 60 })).stdout.toString();
    assert.doesNotMatch(ps, /^sh$/m, ps);
  });

  test('crictl attach -it: joins the container\'s own terminal, resize, the container exits with its code', async () => {
    const id = await create('tty', ['sh'], { stdin: true, tty: true });
    tmux('new-window', '-t', 'pv', '-n', 'attach', crictl(`attach -it ${id}`));
    // Attaching does not reprint the prompt: an empty line makes the shell show it.
    await waitFor('the shell prompt through attach', async () => {
      tmux('send-keys', '-t', 'pv:attach', 'Enter');
      await new Promise((r) => setTimeout(r, 1000));
      return /\/ # /.test(screen('attach')) ? true : undefined;
    }, 120_000);
    await shellAnswersAndFollowsResize('attach', { cols: 90, rows: 25 });
    type('attach', 'exit 4');
    await waitScreen('attach', /crictl-exit=\d+/);
    const status = await waitContainerState(env.daemon.client, id, 'CONTAINER_EXITED', 60_000);
    assert.equal(status.exit_code, 4);
  });

  test('crictl port-forward: two connections through the agent to a server on the pod VM loopback', async () => {
    const localPort = await freePort();
    tmux('new-window', '-t', 'pv', '-n', 'pf', crictl(`port-forward ${sandboxId} ${localPort}:9000`));
    await waitScreen('pf', new RegExp(`Forwarding from 127\\.0\\.0\\.1:${localPort} -> 9000`));
    const big = randomBytes(256 * 1024);
    const [a, b] = await Promise.all([echo(localPort, Buffer.from('hello through crictl\n')), echo(localPort, big)]);
    assert.equal(a.toString(), 'hello through crictl\n');
    assert.ok(b.equals(big), `echoed ${b.length} of ${big.length} bytes`);
    assert.match(screen('pf'), /Handling connection for/);
    tmux('send-keys', '-t', 'pv:pf', 'C-c');
    await waitScreen('pf', /crictl-exit=\d+/);
    assert.equal((await containerState(env.daemon.client, shell)).state, 'CONTAINER_RUNNING');
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Sends `payload` to the local port, half-closes, and returns what came back once the far side ends. */
function echo(port: number, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`echo through port ${port}: ${got} of ${payload.length} bytes after 120 s`)); }, 120_000);
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      // The echo server is `nc -e cat`: it answers as it reads; close once everything came back.
      if (got >= payload.length) socket.end();
    });
    socket.on('error', (e) => { clearTimeout(timer); reject(e); });
    socket.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(chunks)); });
    socket.write(payload);
  });
}
