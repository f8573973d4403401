import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { FRAME, FrameDecoder, MAX_FRAME_BYTES, encodeFrame } from '../../src/admin/frames.js';
import { loadConfig } from '../../src/config/config.js';
import { defaultAdminSocket } from '../../src/config/listen-address.js';
import { keyFingerprint, readAuthorizedKeys } from '../../src/debug/authorized-keys.js';
import { loadOrCreateHostKey } from '../../src/debug/host-key.js';

function withConfig(text: string, fn: (file: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'pv-cfg-'));
  try {
    writeFileSync(join(dir, 'c.toml'), text);
    fn(join(dir, 'c.toml'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('[debug] and [metrics]: off by default, addresses checked, a listen without enabled refused', () => {
  const d = loadConfig(undefined);
  assert.deepEqual({ enabled: d.debug.enabled, ssh: d.debug.sshListen, metrics: d.metrics.listen }, { enabled: false, ssh: '', metrics: '' });
  assert.equal(d.adminListen, '/run/podvisor/podvisor-admin.sock');
  withConfig('[debug]\nenabled = true\nauthorized_keys_file = "/k"\nssh_listen = "[::1]:2222"\n[metrics]\nlisten = "0.0.0.0:9464"\n', (f) => {
    const c = loadConfig(f);
    assert.equal(c.debug.sshListen, '[::1]:2222');
    assert.equal(c.metrics.listen, '0.0.0.0:9464');
  });
  withConfig('[debug]\nssh_listen = "127.0.0.1:2222"\n', (f) => assert.throws(() => loadConfig(f), /ssh_listen.*debug.enabled is false/));
  withConfig('[metrics]\nlisten = "9464"\n', (f) => assert.throws(() => loadConfig(f), /metrics.*listen.*ADDR:PORT/));
  withConfig('[metrics]\nport = 9464\n', (f) => assert.throws(() => loadConfig(f), /port/));
  assert.equal(defaultAdminSocket('/x/cri.sock'), '/x/cri-admin.sock');
});

test('session frames: split across chunks, several per chunk, oversized refused', () => {
  const d = new FrameDecoder();
  const bytes = Buffer.concat([encodeFrame(FRAME.stdout, 'hello'), encodeFrame(FRAME.exit, '{"exitCode":3}')]);
  assert.deepEqual(d.push(bytes.subarray(0, 7)), []);
  const frames = d.push(bytes.subarray(7));
  assert.deepEqual(frames.map((f) => [f.type, f.payload.toString()]), [[FRAME.stdout, 'hello'], [FRAME.exit, '{"exitCode":3}']]);
  const huge = Buffer.alloc(5);
  huge.writeUInt8(FRAME.stdin, 0);
  huge.writeUInt32BE(MAX_FRAME_BYTES + 1, 1);
  assert.throws(() => new FrameDecoder().push(huge), /over the/);
});

test('authorized_keys: keys parsed, comments and option lines skipped, fingerprints as ssh-keygen prints them', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pv-keys-'));
  try {
    const a = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'alice' });
    const b = ssh2.utils.generateKeyPairSync('ed25519');
    const file = join(dir, 'authorized_keys');
    writeFileSync(file, `# team\n\n${a.public}\nfrom="10.0.0.1" ${b.public}\nnot a key\n`);
    const keys = readAuthorizedKeys(file);
    assert.equal(keys.length, 1, 'the option line and the garbage line grant nothing');
    assert.equal(keys[0]!.comment, 'alice');
    assert.match(keyFingerprint(keys[0]!.blob), /^SHA256:[A-Za-z0-9+/]{43}$/);
    assert.deepEqual(readAuthorizedKeys(join(dir, 'missing')), [], 'an unreadable file accepts no key');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the SSH host key is made once, 0600, and kept', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pv-hostkey-'));
  try {
    const file = join(dir, 'debug', 'ssh_host_ed25519_key');
    const first = await loadOrCreateHostKey(file);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const second = await loadOrCreateHostKey(file);
    assert.equal(second.fingerprint, first.fingerprint);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the test-side Prometheus text parser reads what prom-client writes: labels, histograms, counters', async () => {
  const { Counter, Histogram, Registry } = await import('prom-client');
  const { parsePrometheusText } = await import('../helpers/prometheus-text.js');
  const r = new Registry();
  new Counter({ name: 'x_total', help: 'c', labelNames: ['rpc'], registers: [r] }).inc({ rpc: 'A "quoted"\\name' }, 2);
  new Histogram({ name: 'x_seconds', help: 'h', labelNames: ['phase'], buckets: [1, 2], registers: [r] }).observe({ phase: 'launch' }, 1.5);
  const f = parsePrometheusText(await r.metrics());
  assert.equal(f.get('x_total')!.type, 'counter');
  assert.deepEqual(f.get('x_total')!.samples, [{ name: 'x_total', labels: { rpc: 'A "quoted"\\name' }, value: 2 }]);
  const h = f.get('x_seconds')!.samples;
  assert.deepEqual(h.find((s) => s.name === 'x_seconds_count'), { name: 'x_seconds_count', labels: { phase: 'launch' }, value: 1 });
  assert.equal(h.find((s) => s.labels.le === '+Inf')!.value, 1);
  assert.throws(() => parsePrometheusText('orphan_metric 1\n'), /no # TYPE/);
});
