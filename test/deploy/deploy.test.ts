import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { RuntimeClass } from 'kubernetes-models/node.k8s.io/v1/RuntimeClass';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { loadConfig } from '../../src/config/config.js';
import { REPO_ROOT } from '../helpers/daemon.js';

const run = promisify(execFile);
const deploy = (f: string) => join(REPO_ROOT, 'deploy', f);

function yamlDocs(file: string): Array<Record<string, any>> {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((d) => {
    assert.equal(d.errors.length, 0, `${file}: ${d.errors.join('; ')}`);
    return d.toJSON() as Record<string, any>;
  });
}

describe('deployment manifests against the Kubernetes schemas', () => {
  test('RuntimeClass: node.k8s.io/v1 schema, handler kata, podFixed overhead, node-label scheduling', () => {
    const [doc, ...rest] = yamlDocs(deploy('runtimeclass.yaml'));
    assert.equal(rest.length, 0);
    // kubernetes-models validates against the published OpenAPI schema (types, required fields, quantity formats).
    new RuntimeClass(doc as never).validate();
    assert.equal(doc!.apiVersion, 'node.k8s.io/v1');
    assert.equal(doc!.handler, 'kata');
    assert.deepEqual(Object.keys(doc!.overhead.podFixed).sort(), ['cpu', 'memory']);
    assert.ok(parseMi(doc!.overhead.podFixed.memory) >= 345, 'at least the measured idle VM PSS (345 MiB)');
    assert.deepEqual(doc!.scheduling.nodeSelector, { 'podvisor.dev/runtime': 'kata' });
  });

  test('installer DaemonSet: apps/v1 schema, the same node label, and no privilege it does not need', () => {
    const [doc] = yamlDocs(deploy('installer-daemonset.yaml'));
    new DaemonSet(doc as never).validate();
    const spec = doc!.spec.template.spec;
    assert.deepEqual(spec.nodeSelector, { 'podvisor.dev/runtime': 'kata' }, 'installs where the RuntimeClass schedules');
    assert.equal(spec.hostPID, false);
    assert.equal(spec.hostNetwork, false);
    assert.equal(spec.hostIPC, false);
    assert.equal(spec.automountServiceAccountToken, false);
    for (const c of [...spec.initContainers, ...spec.containers]) {
      assert.equal(c.securityContext.privileged, false, c.name);
      assert.equal(c.securityContext.allowPrivilegeEscalation, false, c.name);
      assert.equal(c.securityContext.readOnlyRootFilesystem, true, c.name);
      assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'] }, c.name);
    }
    const hostPaths = spec.volumes.filter((v: any) => v.hostPath).map((v: any) => v.hostPath.path).sort();
    assert.deepEqual(hostPaths, ['/etc/kubernetes/kubelet.conf.d', '/etc/podvisor', '/etc/systemd/system', '/usr/local/bin', '/usr/local/lib'], 'only the directories install.sh writes');
    assert.deepEqual(spec.initContainers[0].command.slice(1), ['--destdir', '/host']);
  });

  test('kubelet drop-in: a KubeletConfiguration with only published v1beta1 fields', () => {
    const [doc] = yamlDocs(deploy('kubelet-podvisor.conf'));
    // Field names and formats from kubelet.config.k8s.io/v1beta1 KubeletConfiguration (Kubernetes API reference).
    const known: Record<string, (v: unknown) => boolean> = {
      apiVersion: (v) => v === 'kubelet.config.k8s.io/v1beta1',
      kind: (v) => v === 'KubeletConfiguration',
      containerRuntimeEndpoint: (v) => typeof v === 'string' && v.startsWith('unix:///'),
      imageServiceEndpoint: (v) => typeof v === 'string' && v.startsWith('unix:///'),
      runtimeRequestTimeout: (v) => typeof v === 'string' && /^(\d+(ns|us|ms|s|m|h))+$/.test(v),
    };
    for (const [k, v] of Object.entries(doc!)) assert.ok(known[k]?.(v), `field ${k}: ${JSON.stringify(v)}`);
    assert.equal(doc!.containerRuntimeEndpoint, 'unix:///run/podvisor/podvisor.sock', 'the daemon\'s default socket');
  });
});

describe('README install steps on this node (no kubelet): install.sh into a temp prefix', () => {
  let dir: string;
  const p = (s: string) => join(dir, s);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pv-install-'));
    await run('bash', [deploy('install.sh'), '--prefix', p('lib/podvisor'), '--confdir', p('etc/podvisor'), '--bindir', p('bin'), '--unitdir', p('systemd'), '--kubelet-dropin-dir', p('kubelet.conf.d')], { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 });
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('puts the code, node, guest image, config, unit and drop-in in place, without dev dependencies', () => {
    for (const f of ['lib/podvisor/bin/podvisord.js', 'lib/podvisor/node', 'lib/podvisor/guest/manifest.json', 'lib/podvisor/guest/vmlinux', 'lib/podvisor/node_modules/tsx', 'lib/podvisor/node_modules/ssh2', 'bin/podvisor', 'bin/podvisord', 'etc/podvisor/config.toml', 'systemd/podvisord.service', 'kubelet.conf.d/50-podvisor.conf']) {
      assert.ok(existsSync(p(f)), `${f} installed`);
    }
    assert.ok(!existsSync(p('lib/podvisor/node_modules/typescript')), 'npm prune --omit=dev dropped development tools');
    assert.equal(statSync(p('bin/podvisor')).mode & 0o777, 0o755);
    const unit = readFileSync(p('systemd/podvisord.service'), 'utf8');
    assert.match(unit, new RegExp(`^ExecStart=${p('bin')}/podvisord --config ${p('etc/podvisor')}/config.toml$`, 'm'));
    assert.match(unit, /^KillMode=process$/m, 'stopping the service leaves pod VMs running');
    const config = loadConfig(p('etc/podvisor/config.toml'));
    assert.equal(config.guestDir, p('lib/podvisor/guest'));
    assert.equal(config.debug.enabled, false, 'debug access stays off');
    assert.equal(config.metrics.listen, '');
  });

  test('the unit passes systemd-analyze verify', async () => {
    const res = await run('systemd-analyze', ['verify', p('systemd/podvisord.service')]).catch((e) => e as { code: number; stderr: string });
    const stderr = (res as { stderr: string }).stderr ?? '';
    // kubelet.service is not installed on this machine; Before= on a missing unit is allowed and only noted.
    const problems = stderr.split('\n').filter((l) => l.trim() && !/kubelet\.service/.test(l));
    assert.deepEqual(problems, []);
  });

  test('the installed podvisord serves, and the installed CLI checks the node and talks to it', async () => {
    const socket = p('run/podvisor.sock');
    const daemon = spawn(p('bin/podvisord'), ['--config', p('etc/podvisor/config.toml'), '--listen', socket, '--root', p('var'), '--state', p('run')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    daemon.stdout!.on('data', (d) => (out += d));
    daemon.stderr!.on('data', (d) => (out += d));
    try {
      const deadline = Date.now() + 60_000;
      while (!out.includes('podvisord serving the CRI')) {
        assert.ok(Date.now() < deadline && daemon.exitCode === null, `installed podvisord did not start:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const version = await run(p('bin/podvisor'), ['--socket', socket, 'version']);
      assert.match(version.stdout, /^podvisor \S+ \(CRI v1\)/);
      const check = await run(p('bin/podvisor'), ['--socket', socket, 'check', '--config', p('etc/podvisor/config.toml'), '--no-boot', '--json']).catch((e) => e as { stdout: string; code: number });
      const report = JSON.parse((check as { stdout: string }).stdout) as { ready: boolean; results: Array<{ item: string; status: string; detail: string }> };
      assert.equal(report.ready, true, JSON.stringify(report.results.filter((r) => r.status === 'fail')));
      assert.match(report.results.find((r) => r.item === 'guest image')!.detail, new RegExp(p('lib/podvisor/guest')));
      const ps = await run(p('bin/podvisor'), ['--socket', socket, 'ps', '--json']);
      assert.deepEqual(JSON.parse(ps.stdout), []);
    } finally {
      daemon.kill('SIGTERM');
      await new Promise((r) => daemon.once('exit', r));
    }
  });
});

function parseMi(q: string): number {
  const m = /^(\d+)(Mi|Gi)$/.exec(q);
  assert.ok(m, `memory quantity ${q} in Mi or Gi`);
  return Number(m![1]) * (m![2] === 'Gi' ? 1024 : 1);
}
