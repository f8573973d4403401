import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { REPO_ROOT } from '../helpers/daemon.js';
import { parsePrometheusText } from '../helpers/prometheus-text.js';
import { unary } from '../../src/cri/client.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import { containerConfig, sandboxConfig, waitContainerState } from '../helpers/cri.js';

const CLI = join(REPO_ROOT, 'src/cli/main.ts');

interface CliResult { code: number | null; stdout: string; stderr: string }

/** Runs the real podvisor CLI against the test daemon's sockets. */
function cli(env: PodTestEnv, args: string[], input?: string): Promise<CliResult> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', CLI, '--socket', env.daemon.socket, ...args], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
    p.stdin.end(input ?? '');
  });
}

/** Runs the CLI on a real pty (util-linux script), typing `input` line by line once the prompt shows. */
function cliOnPty(env: PodTestEnv, args: string[], lines: string[], opts: { rows: number; cols: number }): Promise<CliResult> {
  return new Promise((resolve) => {
    const command = [process.execPath, '--import', 'tsx', CLI, '--socket', env.daemon.socket, ...args].map((a) => `'${a}'`).join(' ');
    const p = spawn('script', ['-q', '-e', '-c', `stty rows ${opts.rows} cols ${opts.cols}; ${command}`, '/dev/null'], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let sent = 0;
    p.stdout.on('data', (d) => {
      stdout += d;
      // One line per prompt: the shell is ready for the next when it prints its prompt again.
      const prompts = stdout.split('podvisor-guest# ').length - 1;
      while (sent < lines.length && sent < prompts) p.stdin.write(lines[sent++] + '\r');
    });
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 120_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

interface SshOutcome { error?: string; output: string; exitCode?: number }

/** Logs in to the gateway with the ssh2 client and runs `lines` in a shell on a pty. */
function sshShell(port: number, user: string, auth: { privateKey?: string; password?: string }, lines: string[]): Promise<SshOutcome> {
  return new Promise((resolve) => {
    const conn = new ssh2.Client();
    let output = '';
    const timer = setTimeout(() => { conn.end(); resolve({ error: 'timeout', output }); }, 120_000);
    const done = (r: SshOutcome) => { clearTimeout(timer); conn.end(); resolve(r); };
    conn.on('error', (e) => done({ error: e.message, output }));
    conn.on('ready', () => {
      conn.shell({ rows: 30, cols: 90, term: 'xterm' }, (err, stream) => {
        if (err) return done({ error: err.message, output });
        let sent = 0;
        let exitCode: number | undefined;
        const feed = () => {
          const prompts = output.split('podvisor-guest# ').length - 1;
          while (sent < lines.length && sent < prompts) stream.write(lines[sent++] + '\r');
        };
        stream.on('data', (d: Buffer) => { output += d; feed(); });
        stream.stderr.on('data', (d: Buffer) => { output += d; });
        stream.on('exit', (code: number) => { exitCode = code; });
        stream.on('close', () => done({ output, ...(exitCode !== undefined ? { exitCode } : {}) }));
      });
    });
    conn.connect({ host: '127.0.0.1', port, username: user, ...auth, readyTimeout: 60_000, tryKeyboard: false });
  });
}

describe('operator tools against a real daemon and VM', () => {
  let env: PodTestEnv;
  let sandboxId: string;
  let containerId: string;
  let metricsPort: number;
  let sshPort: number;
  let listedKey: { private: string; public: string };
  let otherKey: { private: string; public: string };
  let keysDir: string | undefined;
  const rt = () => env.daemon.client.runtime;

  before(async () => {
    metricsPort = await freePort();
    sshPort = await freePort();
    listedKey = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'operator@test' });
    otherKey = ssh2.utils.generateKeyPairSync('ed25519');
    keysDir = mkdtempSync(join(tmpdir(), 'pv-keys-'));
    mkdirSync(keysDir, { recursive: true, mode: 0o700 });
    const authorized = join(keysDir, 'authorized_keys');
    writeFileSync(authorized, `# operators\n${listedKey.public}\n`, { mode: 0o600 });
    env = await startPodTestEnv({ startTimeoutMs: 180_000 },
      // A machine full of emulated VMs may take minutes to boot one (the daemon's default is 2).
      `\n[daemon]\nboot_timeout_seconds = 900\n\n[debug]\nenabled = true\nauthorized_keys_file = "${authorized}"\nssh_listen = "127.0.0.1:${sshPort}"\n\n[metrics]\nlisten = "127.0.0.1:${metricsPort}"\n`,
    );
    await env.pull(env.busybox);
    const sandboxCfg = sandboxConfig('opstool', join(env.dir, 'logs', 'opstool'));
    sandboxId = (await unary(rt(), 'RunPodSandbox', { config: sandboxCfg })).pod_sandbox_id;
    containerId = (await unary(rt(), 'CreateContainer', {
      pod_sandbox_id: sandboxId,
      config: containerConfig('app', env.busybox, ['sh', '-c', 'echo app-started; while true; do sleep 1; done']),
      sandbox_config: sandboxCfg,
    })).container_id;
    await unary(rt(), 'StartContainer', { container_id: containerId });
    await waitContainerState(env.daemon.client, containerId, 'CONTAINER_RUNNING');
  });

  after(async () => {
    await env?.dispose();
    if (keysDir) rmSync(keysDir, { recursive: true, force: true });
  });

  test('ps lists the sandbox with its VM, as a table and as JSON', async () => {
    const table = await cli(env, ['ps']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^SANDBOX\s+POD\s+STATE\s+PID\s+ACCEL\s+VCPUS\s+MEMORY\s+UPTIME\s+BOOT/m);
    assert.match(table.stdout, new RegExp(`^${sandboxId.slice(0, 12)}\\s+e2e/opstool\\s+ready\\s+\\d+\\s+(tcg|kvm)\\s+1\\s+\\d+Mi\\s+\\S+\\s+cold`, 'm'));
    const json = await cli(env, ['ps', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const rows = JSON.parse(json.stdout) as Array<{ id: string; qemuPid: number; accel: string; vcpus: number; memoryMiB: number; containers: number }>;
    const row = rows.find((r) => r.id === sandboxId)!;
    assert.ok(row.qemuPid > 0 && readFileSync(`/proc/${row.qemuPid}/cmdline`, 'utf8').includes('qemu-system'), 'the pid is the QEMU process');
    assert.equal(row.containers, 1);
  });

  test('inspect shows the VM command line, QMP status, /proc figures and the agent, by namespace/name and by prefix', async () => {
    const res = await cli(env, ['inspect', '--json', 'e2e/opstool']);
    assert.equal(res.code, 0, res.stderr);
    const s = JSON.parse(res.stdout);
    assert.equal(s.id, sandboxId);
    assert.ok(s.vm.commandLine.some((a: string) => a.includes('qemu-system')));
    assert.ok(s.vm.commandLine.includes('microvm') || s.vm.commandLine.some((a: string) => a.startsWith('microvm')));
    assert.equal(s.vm.qmpStatus.status, 'running');
    assert.ok(s.vm.usage.rssBytes > 50 * 1024 * 1024, 'a booted VM has tens of MiB resident');
    assert.ok(s.vm.usage.vcpuSeconds > 0);
    assert.equal(s.agent.healthy, true);
    assert.equal(s.containers[0].id, containerId);
    assert.ok(s.images.length === 1 && s.vm.disks.length === 1, 'the image disk is plugged');
    const human = await cli(env, ['inspect', sandboxId.slice(0, 8)]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /QMP status:\s+running/);
    assert.match(human.stdout, /healthy:\s+true/);
  });

  test('exec runs in the container with the exit status passed on, stdin with -i', async () => {
    const res = await cli(env, ['exec', 'opstool', '--', 'sh', '-c', 'echo out; echo err >&2; cat /proc/1/cmdline | tr "\\0" " "; exit 3']);
    assert.equal(res.code, 3, res.stderr);
    assert.match(res.stdout, /^out\n/);
    assert.match(res.stdout, /sh -c echo app-started/, 'PID 1 is the container\'s process: this ran in the container');
    assert.match(res.stderr, /err/);
    const piped = await cli(env, ['exec', '-i', containerId.slice(0, 10), '--', 'sh', '-c', 'tr a-z A-Z'], 'hello stdin\n');
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal(piped.stdout, 'HELLO STDIN\n');
  });

  test('cp copies a file into the container and back out', async () => {
    const src = join(env.dir, 'cp-src');
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, 'note.txt'), 'copied through tar\n');
    const into = await cli(env, ['cp', join(src, 'note.txt'), `${sandboxId.slice(0, 12)}:/tmp/incoming`]);
    assert.equal(into.code, 0, into.stderr);
    const cat = await cli(env, ['exec', 'opstool', '--', 'cat', '/tmp/incoming/note.txt']);
    assert.equal(cat.stdout, 'copied through tar\n');
    const out = join(env.dir, 'cp-out');
    const back = await cli(env, ['cp', `${sandboxId.slice(0, 12)}:/tmp/incoming/note.txt`, out]);
    assert.equal(back.code, 0, back.stderr);
    assert.equal(readFileSync(join(out, 'note.txt'), 'utf8'), 'copied through tar\n');
  });

  test('logs prints the guest console and the agent log', async () => {
    const res = await cli(env, ['logs', 'opstool']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /^\[console\] podvisor-init: reached \/init/m, 'the guest init on the serial console');
    assert.match(res.stdout, /^\[agent\] \S+ (kernel|agent) \w+ /m, 'log lines the agent forwarded');
    const agentOnly = await cli(env, ['logs', '--source', 'agent', 'opstool']);
    assert.equal(agentOnly.code, 0);
    assert.doesNotMatch(agentOnly.stdout, /podvisor-init/);
    assert.match(agentOnly.stdout, /^\S+Z (kernel|agent) /m);
  });

  test('console opens a shell in the guest itself on a pty, with the terminal size, and the session is logged', async () => {
    const res = await cliOnPty(env, ['console', 'opstool'], ['stty size', 'echo guest-$((6*7)); ls /run/podvisor/containers', 'exit'], { rows: 33, cols: 111 });
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /33 111/, 'the guest pty has our terminal size');
    assert.match(res.stdout, /guest-42/);
    assert.ok(res.stdout.includes(containerId), 'the guest root sees the container rootfs mounts: not inside a container');
    assert.match(env.daemon.output(), /"via":"cli".*"sandbox":"[0-9a-f]{64}".*debug console session started/);
    await waitForLog(env, /"via":"cli".*"end":"[^"]+".*debug console session ended/);
  });

  test('SSH gateway: a listed key gets a guest shell, sessions are logged with the fingerprint', async () => {
    const res = await sshShell(sshPort, 'opstool', { privateKey: listedKey.private }, ['echo ssh-$((40+2)); hostname', 'exit 0']);
    assert.equal(res.error, undefined, res.output);
    assert.match(res.output, /ssh-42/);
    assert.match(res.output, /\nopstool\r?\n/, 'the sandbox hostname: the shell is in that VM');
    assert.equal(res.exitCode, 0);
    await waitForLog(env, /"via":"ssh","fingerprint":"SHA256:[A-Za-z0-9+/]+".*"end":"[^"]+".*debug console session ended/);
  });

  test('SSH gateway refuses passwords and unlisted keys, and tells an unknown sandbox so', async () => {
    const password = await sshShell(sshPort, 'opstool', { password: 'root' }, []);
    assert.match(password.error ?? '', /authentication methods failed/);
    const unlisted = await sshShell(sshPort, 'opstool', { privateKey: otherKey.private }, []);
    assert.match(unlisted.error ?? '', /authentication methods failed/);
    await waitForLog(env, /ssh login refused: key not in authorized_keys/);
    await waitForLog(env, /ssh login refused: only public keys are accepted/);
    const unknown = await sshShell(sshPort, 'no-such-pod', { privateKey: listedKey.private }, []);
    assert.match(unknown.output, /no sandbox matches "no-such-pod"/);
    assert.equal(unknown.exitCode, 1);
  });

  test('/metrics: every series the README names is there, parsed as Prometheus text, with values from this VM', async () => {
    // One refused CRI call, so the error counter has a sample to show.
    await assert.rejects(unary(rt(), 'PodSandboxStatus', { pod_sandbox_id: 'f'.repeat(64) }), /not found/);
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const byName = parsePrometheusText(text);
    const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
    const named = [...new Set([...readme.matchAll(/^\| `(podvisor_[a-z_]+)`/gm)].map((m) => m[1]!))];
    assert.ok(named.length >= 10, `README names the series (found ${named.join(', ')})`);
    for (const name of named) {
      const f = byName.get(name);
      assert.ok(f && f.samples.length > 0, `${name} is exported with at least one sample`);
    }
    const sample = (name: string, labels: Record<string, string>) =>
      byName.get(name.replace(/_(bucket|sum|count)$/, ''))?.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
      ?? byName.get(name)?.samples.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    const ours = { sandbox: sandboxId };
    assert.ok(sample('podvisor_vm_memory_rss_bytes', ours)!.value > 50 * 1024 * 1024);
    assert.ok(sample('podvisor_vm_memory_pss_bytes', ours)!.value > 0);
    assert.ok(sample('podvisor_vm_vcpu_seconds_total', ours)!.value > 0);
    assert.ok(sample('podvisor_container_log_bytes_total', ours)!.value >= 'app-started\n'.length);
    assert.equal(sample('podvisor_sandboxes', { state: 'ready' })!.value, 1);
    assert.equal(sample('podvisor_vm_running', {})!.value, 1);
    for (const phase of ['launch', 'kernel', 'agent_ready']) {
      assert.equal(sample('podvisor_sandbox_boot_phase_seconds_count', { phase })?.value, 1, `one boot observed in phase ${phase}`);
      assert.ok(sample('podvisor_sandbox_boot_phase_seconds_sum', { phase })!.value >= 0);
    }
    assert.ok(sample('podvisor_agent_rpc_duration_seconds_count', { method: 'CreateContainer' })!.value >= 1);
    assert.equal(sample('podvisor_image_pulls_total', { result: 'success' })!.value, 1);
    assert.ok(sample('podvisor_image_pull_bytes_total', {})!.value > 100_000);
    assert.equal(sample('podvisor_image_pull_duration_seconds_count', {})!.value, 1);
    assert.equal(sample('podvisor_cri_errors_total', { rpc: 'PodSandboxStatus', code: 'NOT_FOUND' })?.value, 1);
    const viaCli = await cli(env, ['metrics']);
    assert.equal(viaCli.code, 0);
    assert.match(viaCli.stdout, /^podvisor_sandboxes\{state="ready"\} 1$/m);
  });

  test('check passes on this host and says what it found, with the boot probe', async () => {
    const res = await cli(env, ['check', '--json']);
    assert.equal(res.code, 0, res.stdout + res.stderr);
    const report = JSON.parse(res.stdout) as { ready: boolean; results: Array<{ item: string; status: string; detail: string }> };
    assert.equal(report.ready, true);
    const item = (name: string) => report.results.find((r) => r.item === name)!;
    assert.match(item('qemu').detail, /QEMU emulator version \d+\.\d+/);
    assert.match(item('accelerator').detail, /TCG|KVM/);
    assert.match(item('guest image').detail, /kernel \d+\.\d+/);
    assert.match(item('cri socket').detail, /answers: podvisor/);
    assert.match(item('boot probe').detail, /guest booted to the agent in [\d.]+ s/);
    assert.equal(res.stderr, '', '--json stays quiet');
    const human = await cli(env, ['check', '--no-boot']);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /^ok\s+qemu\s+QEMU emulator/m);
    assert.match(human.stdout, /^ready: this node can run pods/m);
  });

  test('exit codes and --help', async () => {
    assert.equal((await cli(env, ['inspect', 'nope/nothing'])).code, 3);
    assert.equal((await cli(env, ['exec', 'opstool', 'ls'])).code, 2, 'no -- before the command');
    assert.equal((await cli(env, ['frobnicate'])).code, 2);
    const down = await cli(env, ['--admin-socket', join(env.dir, 'absent.sock'), 'ps']);
    assert.equal(down.code, 4);
    assert.match(down.stderr, /cannot reach podvisord's admin socket/);
    for (const c of ['ps', 'inspect', 'console', 'exec', 'cp', 'logs', 'check', 'metrics', 'image', 'version', 'status']) {
      const h = await cli(env, [c, '--help']);
      assert.equal(h.code, 0, `${c} --help`);
      assert.match(h.stdout, new RegExp(`^Usage: podvisor ${c}`), `${c} --help prints its usage`);
    }
    const images = await cli(env, ['image', 'ls', '--json']);
    assert.equal(images.code, 0, images.stderr);
    assert.ok((JSON.parse(images.stdout) as Array<{ tags: string[] }>).some((i) => i.tags.includes(env.busybox)));
    assert.equal((await cli(env, ['image', 'rm', 'sha256:0000000000000000000000000000000000000000000000000000000000000000'])).code, 3);
    const prune = await cli(env, ['image', 'prune', '--json']);
    assert.equal(prune.code, 0, prune.stderr);
    assert.deepEqual(JSON.parse(prune.stdout), { removed: [], kept: 1 }, 'the running container keeps its image');
  });
});

async function waitForLog(env: PodTestEnv, pattern: RegExp): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!pattern.test(env.daemon.output())) {
    if (Date.now() > deadline) assert.fail(`daemon log never matched ${pattern}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
