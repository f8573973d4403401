import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/config.js';
import { templateTuningFor } from '../../src/pod/vm-sizing.js';
import { isPodvisorError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'pvcfg-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function file(text: string): string {
  const f = join(dir, `c${n++}.toml`);
  writeFileSync(f, text);
  return f;
}
function refusal(text: string): string {
  try {
    loadConfig(file(text));
  } catch (e) {
    assert.ok(isPodvisorError(e, 'INVALID_ARGUMENT'));
    return e.message;
  }
  assert.fail('config was accepted');
}

describe('config', () => {
  test('no file: defaults with the "" and kata handlers', () => {
    const c = loadConfig(undefined);
    assert.equal(c.listen, '/run/podvisor/podvisor.sock');
    assert.equal(c.root, '/var/lib/podvisor');
    assert.equal(c.state, '/run/podvisor');
    assert.deepEqual(Object.keys(c.runtimes).sort(), ['', 'kata']);
    assert.equal(c.runtimes.kata!.machine, 'microvm');
    assert.equal(c.debug.enabled, false);
  });

  test('start-up and memory knobs: launch bound per host, TCG cache and free-page reporting per handler', () => {
    const d = loadConfig(undefined);
    assert.ok(d.vm.maxParallelLaunches >= 1, 'default: the host\'s cores');
    assert.equal(d.runtimes['']!.tcgTbSizeMiB, 32);
    assert.equal(d.runtimes['']!.freePageReporting, false);
    const c = loadConfig(file('[vm]\nmax_parallel_launches = 3\n[runtimes.kata]\ntcg_tb_size_mib = 0\nfree_page_reporting = true\n'));
    assert.equal(c.vm.maxParallelLaunches, 3);
    assert.equal(c.runtimes.kata!.tcgTbSizeMiB, 0);
    assert.equal(c.runtimes.kata!.freePageReporting, true);
    assert.match(refusal('[vm]\nmax_parallel_launches = 0\n'), /max_parallel_launches/);
    assert.match(refusal('[runtimes.kata]\ntcg_tb_size_mib = -1\n'), /tcg_tb_size_mib/);
  });

  test('template clone tuning per handler: clone TCG cache and the template agent\'s V8 flag set', () => {
    const d = loadConfig(undefined).runtimes['']!;
    assert.equal(d.cloneTcgTbSizeMiB, 16);
    assert.equal(d.templateAgentV8, 'jitless');
    assert.deepEqual(templateTuningFor(d), { cloneTcgTbSizeMiB: 16, agentV8: 'jitless' });
    const c = loadConfig(file('[runtimes.kata]\ntemplate = true\nclone_tcg_tb_size_mib = 0\ntemplate_agent_v8 = "default"\n')).runtimes.kata!;
    assert.deepEqual(templateTuningFor(c), { agentV8: 'default' }, '0: clones keep tcg_tb_size_mib');
    assert.match(refusal('[runtimes.kata]\ntemplate = true\nclone_tcg_tb_size_mib = -1\n'), /clone_tcg_tb_size_mib/);
    assert.match(refusal('[runtimes.kata]\ntemplate = true\ntemplate_agent_v8 = "turbo"\n'), /template_agent_v8/);
    // Set on a handler without templates it would do nothing: refused, saying so.
    assert.match(refusal('[runtimes.kata]\nclone_tcg_tb_size_mib = 12\n'), /clone_tcg_tb_size_mib.*template clones only/);
    assert.match(refusal('[runtimes.kata]\ntemplate_agent_v8 = "lite"\n'), /template_agent_v8.*template clones only/);
  });

  test('[streaming]: loopback and a chosen port by default; TLS needs both files; wildcards and names refused', () => {
    const d = loadConfig(undefined).streaming;
    assert.deepEqual(d, { address: '127.0.0.1', port: 0, idleTimeoutSeconds: 14400 });
    const c = loadConfig(file('[streaming]\naddress = "::1"\nport = 10250\nidle_timeout_seconds = 60\ntls_cert_file = "/c.pem"\ntls_key_file = "/k.pem"\n')).streaming;
    assert.deepEqual(c, { address: '::1', port: 10250, idleTimeoutSeconds: 60, tls: { certFile: '/c.pem', keyFile: '/k.pem' } });
    assert.match(refusal('[streaming]\ntls_cert_file = "/c.pem"\n'), /tls_key_file.*set both or neither/);
    assert.match(refusal('[streaming]\naddress = "0.0.0.0"\n'), /not a wildcard/);
    assert.match(refusal('[streaming]\naddress = "node1"\n'), /must be an IP address/);
    assert.match(refusal('[streaming]\nstream_timeout = 5\n'), /streaming\.stream_timeout/);
  });

  test('flags win over the file', () => {
    const c = loadConfig(file('[daemon]\nlisten = "/a/b.sock"\nroot = "/r"\n'), { listen: '/x/y.sock' });
    assert.equal(c.listen, '/x/y.sock');
    assert.equal(c.root, '/r');
  });

  test('a handler table overrides defaults; the other default handler remains', () => {
    const c = loadConfig(file('[runtimes.kata]\nvcpus = 2\nmemory_mib = 1024\n[runtimes.""]\nmachine = "q35"\n'));
    assert.equal(c.runtimes.kata!.vcpus, 2);
    assert.equal(c.runtimes.kata!.memoryMiB, 1024);
    assert.equal(c.runtimes['']!.machine, 'q35');
  });

  test('registry mirrors in containerd form', () => {
    const c = loadConfig(file('[registry.mirrors."registry.k8s.io"]\nendpoints = ["http://127.0.0.1:5000"]\n[registry]\ninsecure = ["127.0.0.1:5000"]\n'));
    assert.deepEqual(c.registry.mirrors['registry.k8s.io'], { endpoints: ['http://127.0.0.1:5000'] });
    assert.deepEqual(c.registry.insecure, ['127.0.0.1:5000']);
  });

  test('unknown keys are named with their path, at any depth', () => {
    assert.match(refusal('listen = "/x"\n'), /key "listen" is not a known setting/);
    assert.match(refusal('[daemon]\nlisen = "/x"\n'), /"daemon\.lisen" is not a known setting/);
    assert.match(refusal('[registry.mirrors."docker.io"]\nendpiont = ["https://m"]\n'), /registry\.mirrors\."docker\.io"\.endpiont is not a known setting/);
  });

  test('bad values say what is wrong', () => {
    assert.match(refusal('[runtimes.kata]\nmachine = "pc"\n'), /must be one of "microvm", "q35", got "pc"/);
    assert.match(refusal('[runtimes.kata]\nbackend = "xen"\n'), /must be one of "qemu", "libvirt", got "xen"/);
    assert.match(refusal('[runtimes.kata]\nbackend = "libvirt"\ntemplate = true\n'), /libvirt backend cannot restore a VM template/);
    assert.match(refusal('[runtimes.kata]\nvcpus = 0\n'), /must be at least 1/);
    assert.match(refusal('[daemon]\nroot = "relative/dir"\n'), /must be an absolute path/);
    assert.match(refusal('[registry.mirrors."x.io"]\nendpoints = ["ftp://m"]\n'), /must start with http:\/\/ or https:\/\//);
    assert.match(refusal('[debug]\nenabled = true\n'), /needs a key/);
    assert.match(refusal('[daemon]\nlog_level = "loud"\n'), /log_level/);
  });

  test('the file is named in every refusal, and broken TOML is refused', () => {
    assert.match(refusal('[daemon\n'), /not valid TOML/);
    assert.match(refusal('bogus = 1\n'), new RegExp(dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    assert.throws(() => loadConfig(join(dir, 'missing.toml')), /cannot read it/);
  });
});
