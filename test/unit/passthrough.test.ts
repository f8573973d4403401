import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type PassthroughConfig } from '../../src/config/config.js';
import { isPodvisorError } from '../../src/errors.js';
import { RouteTable } from '../../src/cri/passthrough/route-table.js';
import { sandboxDestination } from '../../src/cri/passthrough/routing-rules.js';
import { mergeImages, mergeStatus } from '../../src/cri/passthrough/merge.js';
import { changes } from '../../src/cri/passthrough/events.js';

/** The pass-through layer's own logic (issue 18); the end-to-end tests are in test/passthrough/. */

const dir = mkdtempSync(join(tmpdir(), 'pvpt-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function config(text: string) {
  const f = join(dir, `c${Math.random().toString(36).slice(2)}.toml`);
  writeFileSync(f, text);
  return loadConfig(f);
}

const ENDPOINT = 'unix:///run/containerd/containerd.sock';
const rules = (over: Partial<PassthroughConfig> = {}): PassthroughConfig => ({ endpoint: ENDPOINT, hostNamespaces: true, handlers: ['runc'], ...over });
const pod = (ns: Record<string, string> = {}) => ({
  metadata: { name: 'p', namespace: 'n', uid: 'u', attempt: 0 },
  linux: { security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD', ...ns } } },
}) as never;

describe('[passthrough] config', () => {
  test('off by default', () => {
    assert.deepEqual(loadConfig(undefined).passthrough, { endpoint: '', hostNamespaces: false, handlers: [] });
  });

  test('endpoint, host_namespaces and handlers are read; rules without an endpoint, and non-unix endpoints, are refused', () => {
    assert.deepEqual(config(`[passthrough]\nendpoint = "${ENDPOINT}"\nhost_namespaces = true\nhandlers = ["runc"]\n`).passthrough,
      { endpoint: ENDPOINT, hostNamespaces: true, handlers: ['runc'] });
    assert.throws(() => config('[passthrough]\nhost_namespaces = true\n'), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /passthrough.host_namespaces.*endpoint is not set/.test(e.message));
    assert.throws(() => config('[passthrough]\nendpoint = "/run/c.sock"\n'), (e) => isPodvisorError(e) && /unix socket URL/.test(e.message));
    assert.throws(() => config(`[passthrough]\nendpoint = "${ENDPOINT}"\nhandler = ["runc"]\n`), (e) => isPodvisorError(e) && /passthrough.handler" is not a known setting/.test(e.message));
    assert.throws(() => config(`[runtimes.fast]\nvcpus = 2\n[passthrough]\nendpoint = "${ENDPOINT}"\nhandlers = ["fast"]\n`), (e) => isPodvisorError(e) && /"fast".*VM table/.test(e.message));
  });
});

describe('routing rules', () => {
  const vm = ['', 'kata'];
  test('nothing leaves its VM without an endpoint, whatever it asks', () => {
    assert.equal(sandboxDestination(rules({ endpoint: '' }), vm, pod({ network: 'NODE' }), ''), 'vm');
  });
  test('host namespaces go to the pass-through runtime only when the rules say so and no VM handler is named', () => {
    for (const ns of [{ network: 'NODE' }, { pid: 'NODE' }, { ipc: 'NODE' }] as Record<string, string>[]) {
      assert.equal(sandboxDestination(rules(), vm, pod(ns), ''), 'passthrough');
      assert.equal(sandboxDestination(rules({ hostNamespaces: false }), vm, pod(ns), ''), 'vm');
    }
    assert.equal(sandboxDestination(rules(), vm, pod(), ''), 'vm');
  });
  test('a VM handler with host namespaces is refused with what to change; listing it routes it', () => {
    assert.throws(() => sandboxDestination(rules(), vm, pod({ network: 'NODE' }), 'kata'),
      (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && /"n\/p".*runtime handler "kata".*list "kata" in \[passthrough\] handlers/.test(e.message));
    assert.equal(sandboxDestination(rules({ handlers: ['kata'] }), vm, pod({ network: 'NODE' }), 'kata'), 'passthrough');
  });
  test('listed handlers go by name; unknown handlers stay with podvisor, which names them', () => {
    assert.equal(sandboxDestination(rules(), vm, pod(), 'runc'), 'passthrough');
    assert.equal(sandboxDestination(rules(), vm, pod({ network: 'NODE' }), 'gvisor'), 'vm');
  });
});

describe('route table', () => {
  test('persists every change atomically (0600) and routes full ids and unique prefixes', () => {
    const state = join(dir, 'state1');
    const t = new RouteTable(state);
    t.addSandbox('aaaa1111', 'runc');
    t.addSandbox('aaaa2222', '');
    t.addContainer('cccc1111', 'aaaa1111');
    const file = join(state, 'passthrough', 'routes.json');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const again = new RouteTable(state); // a restart
    assert.equal(again.sandbox('aaaa1111'), 'aaaa1111');
    assert.equal(again.sandbox('aaaa1'), 'aaaa1111');
    assert.equal(again.sandbox('aaaa'), undefined, 'ambiguous prefix');
    assert.equal(again.container('cccc'), 'cccc1111');
    again.removeSandbox('aaaa1111');
    assert.equal(again.container('cccc1111'), undefined, 'a sandbox takes its containers with it');
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')).sandboxes, { aaaa2222: { handler: '' } });
  });
  test('adopt adds what the other runtime reports; prune drops what it no longer has', () => {
    const t = new RouteTable(join(dir, 'state2'));
    t.addSandbox('s1', '');
    t.adopt([{ id: 's2', handler: 'runc' }], [{ id: 'c2', sandboxId: 's2' }]);
    assert.equal(t.sandbox('s2'), 's2');
    assert.deepEqual(t.prune(new Set(['s2']), new Set(['c2'])), ['s1']);
    assert.deepEqual(t.sandboxIds(), ['s2']);
  });
});

describe('merging answers', () => {
  test('images: one entry per id with the union of names', () => {
    const merged = mergeImages(
      [{ id: 'sha256:a', repo_tags: ['r/a:1'], repo_digests: ['r/a@sha256:x'] }],
      [{ id: 'sha256:a', repo_tags: ['r/a:2'], repo_digests: ['r/a@sha256:x'] } as never, { id: 'sha256:b', repo_tags: ['r/b:1'], repo_digests: [] } as never],
    );
    assert.deepEqual(merged.map((i) => [i.id, i.repo_tags, i.repo_digests]), [
      ['sha256:a', ['r/a:1', 'r/a:2'], ['r/a@sha256:x']],
      ['sha256:b', ['r/b:1'], []],
    ]);
  });

  const local = {
    status: { conditions: [{ type: 'RuntimeReady', status: true, reason: '', message: '' }, { type: 'NetworkReady', status: true, reason: '', message: '' }] },
    runtime_handlers: [{ name: '' }, { name: 'kata' }],
  };
  test('Status: NetworkReady needs both; RuntimeReady stays podvisor\'s; the other runtime gets its own conditions', () => {
    const remote = { status: { conditions: [{ type: 'RuntimeReady', status: true, reason: '', message: '' }, { type: 'NetworkReady', status: false, reason: 'NetworkPluginNotReady', message: 'cni plugin not initialized' }] }, runtime_handlers: [] };
    const m = mergeStatus(local, remote as never, rules());
    const c = Object.fromEntries(m.status!.conditions!.map((x) => [x.type, x]));
    assert.equal(c.RuntimeReady!.status, true);
    assert.equal(c.NetworkReady!.status, false);
    assert.match(c.NetworkReady!.message!, /pass-through runtime.*cni plugin not initialized/);
    assert.equal(c.PassthroughRuntimeReady!.status, true);
    assert.deepEqual(m.runtime_handlers!.map((h) => h.name), ['', 'kata', 'runc']);
  });
  test('Status: an unreachable runtime leaves podvisor\'s conditions alone and says so in its own', () => {
    const m = mergeStatus(local, new Error('connection refused'), rules());
    const c = Object.fromEntries(m.status!.conditions!.map((x) => [x.type, x]));
    assert.equal(c.RuntimeReady!.status, true);
    assert.equal(c.NetworkReady!.status, true);
    assert.equal(c.PassthroughRuntimeReady!.status, false);
    assert.equal(c.PassthroughRuntimeReady!.reason, 'PassthroughUnavailable');
  });
});

describe('events from polling a runtime without GetContainerEvents', () => {
  test('each change of state is the event containerd would send', () => {
    const before = new Map([
      ['s', { sandboxId: 's', state: 'SANDBOX_READY' }],
      ['c1', { sandboxId: 's', state: 'CONTAINER_CREATED' }],
      ['c2', { sandboxId: 's', state: 'CONTAINER_RUNNING' }],
      ['c3', { sandboxId: 's', state: 'CONTAINER_EXITED' }],
    ]);
    const now = new Map([
      ['s', { sandboxId: 's', state: 'SANDBOX_READY' }],
      ['c1', { sandboxId: 's', state: 'CONTAINER_RUNNING' }],
      ['c2', { sandboxId: 's', state: 'CONTAINER_EXITED' }],
      ['c4', { sandboxId: 's', state: 'CONTAINER_RUNNING' }],
    ]);
    assert.deepEqual(changes(before, now), [
      ['c1', 'CONTAINER_STARTED_EVENT', 's'],
      ['c2', 'CONTAINER_STOPPED_EVENT', 's'],
      ['c4', 'CONTAINER_CREATED_EVENT', 's'],
      ['c4', 'CONTAINER_STARTED_EVENT', 's'],
      ['c3', 'CONTAINER_DELETED_EVENT', 's'],
    ]);
  });
});
