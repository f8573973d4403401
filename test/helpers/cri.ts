import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { status as grpcStatus } from '@grpc/grpc-js';
import { unary } from './daemon.js';
import type { CriClient } from '../../src/cri/client.js';
import { waitFor } from './wait.js';

export { waitFor };

/** Small helpers for driving the CRI from the pod e2e tests. */

export function sandboxConfig(name: string, logDirectory: string, extra: Record<string, unknown> = {}) {
  return {
    metadata: { name, namespace: 'e2e', uid: `uid-${name}`, attempt: 0 },
    hostname: name,
    log_directory: logDirectory,
    labels: { app: name },
    ...extra,
  };
}

export function containerConfig(name: string, image: string, command: string[], extra: Record<string, unknown> = {}) {
  return { metadata: { name }, image: { image }, command, log_path: `${name}.log`, labels: { name }, ...extra };
}

export async function rejectsWith(p: Promise<unknown>, code: keyof typeof grpcStatus, pattern?: RegExp): Promise<string> {
  try {
    await p;
  } catch (e) {
    const err = e as { code?: number; details?: string };
    assert.equal(err.code, grpcStatus[code], `expected ${code}, got ${err.code}: ${err.details}`);
    if (pattern) assert.match(err.details ?? '', pattern);
    return err.details ?? '';
  }
  assert.fail(`expected the call to fail with ${code}`);
}

export async function containerState(client: CriClient, id: string) {
  return (await unary(client.runtime, 'ContainerStatus', { container_id: id })).status!;
}

export function waitContainerState(client: CriClient, id: string, state: string, timeoutMs = 60_000) {
  return waitFor(`container ${id.slice(0, 12)} to be ${state}`, async () => {
    const s = await containerState(client, id);
    return s.state === state ? s : undefined;
  }, timeoutMs);
}

export interface LogRecord { time: string; stream: string; tag: string; text: string }

export async function readCriLog(path: string): Promise<LogRecord[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return text.split('\n').filter(Boolean).map((line) => {
    const m = /^(\S+) (stdout|stderr) ([PF]) (.*)$/.exec(line);
    assert.ok(m, `not a CRI log line: ${JSON.stringify(line)}`);
    return { time: m[1]!, stream: m[2]!, tag: m[3]!, text: m[4]! };
  });
}

/** Runs a short container to completion and returns its status and log. */
export async function runToExit(client: CriClient, sandboxId: string, sandboxCfg: object, config: object, timeoutMs?: number) {
  const { container_id } = await unary(client.runtime, 'CreateContainer', { pod_sandbox_id: sandboxId, config, sandbox_config: sandboxCfg });
  await unary(client.runtime, 'StartContainer', { container_id });
  const status = await waitContainerState(client, container_id, 'CONTAINER_EXITED', timeoutMs);
  return { id: container_id, status, log: await readCriLog(status.log_path) };
}
