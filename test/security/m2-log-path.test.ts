import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, symlink, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { containerLogFile } from '../../src/pod/container-service.js';
import { CriLogWriter } from '../../src/pod/cri-log-writer.js';
import { containerConfig, sampleSandbox } from '../helpers/pod-records.js';

/**
 * M2 (security review 2026-12-01): log_path with `..`, or an absolute one with
 * an empty log_directory, made podvisord create and append to any host file,
 * following symlinks. The path now stays inside log_directory and the file is
 * opened without following a symlink.
 */
test('M2: log_path cannot leave log_directory', () => {
  const s = sampleSandbox();
  s.config.logDirectory = '/var/log/pods/ns_pod_uid';
  assert.equal(containerLogFile(s, containerConfig({ logPath: 'web/0.log' })), '/var/log/pods/ns_pod_uid/web/0.log');
  assert.throws(() => containerLogFile(s, containerConfig({ logPath: '../../../../etc/nologin' })), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => containerLogFile(s, containerConfig({ logPath: 'web/../../x.log' })), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => containerLogFile(s, containerConfig({ logPath: '/etc/nologin' })), { code: 'INVALID_ARGUMENT' });
  s.config.logDirectory = '';
  assert.throws(() => containerLogFile(s, containerConfig({ logPath: '/etc/nologin' })), { code: 'INVALID_ARGUMENT' });
  s.config.logDirectory = 'relative/dir';
  assert.throws(() => containerLogFile(s, containerConfig({ logPath: '0.log' })), { code: 'INVALID_ARGUMENT' });
});

test('M2: a symlink planted at the log file or its directory is not followed', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pv-m2-'));
  try {
    const victim = join(dir, 'victim');
    await writeFile(victim, 'host file\n');
    await mkdir(join(dir, 'logs'));
    await symlink(victim, join(dir, 'logs', '0.log'));
    await assert.rejects(CriLogWriter.open(join(dir, 'logs', '0.log')));
    await symlink(dir, join(dir, 'logs', 'web'));
    await assert.rejects(CriLogWriter.open(join(dir, 'logs', 'web', 'victim')));
    assert.equal(await readFile(victim, 'utf8'), 'host file\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
