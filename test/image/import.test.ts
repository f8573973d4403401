import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { isPodvisorError } from '../../src/errors.js';
import { importArchive } from '../../src/image/archive-import.js';
import { ImageService } from '../../src/image/image-service.js';
import { pushImage, pushTestImages, remoteJson, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { tarOf } from '../helpers/tar.js';
import { tempDirRemovedOnSignal } from '../helpers/signal-cleanup.js';

/**
 * `podvisor image import` for air-gapped nodes: OCI and docker archives written by skopeo from the
 * test registry, loaded into a fresh store (domain API and the real CLI).
 */
const REPO_ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
let reg: TestRegistry;
const work = tempDirRemovedOnSignal('podvisor-import-test-');
let busyboxId: string;

before(async () => {
  reg = await startRegistry();
  await pushTestImages(reg);
  busyboxId = (await remoteJson<{ config: { digest: string } }>(reg, 'podvisor-test/busybox', 'latest')).config.digest;
  const src = `docker://${reg.host}/podvisor-test/busybox:latest`;
  execFileSync('skopeo', ['copy', '--quiet', '--src-tls-verify=false', src, `oci-archive:${join(work, 'oci.tar')}:airgap.example/tools/busybox:1.0`]);
  execFileSync('skopeo', ['copy', '--quiet', '--src-tls-verify=false', src, `docker-archive:${join(work, 'docker.tar')}:airgap.example/tools/busybox:docker`]);
  execFileSync('skopeo', ['copy', '--quiet', '--src-tls-verify=false', src, `oci-archive:${join(work, 'unnamed.tar')}`]);
});
after(async () => {
  await reg?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function service(): Promise<ImageService> {
  const svc = new ImageService({ root: mkdtempSync(join(work, 'root-')) });
  await svc.init();
  return svc;
}

test('an OCI archive imports under the name it carries, same id as pulled, with its disk', async () => {
  const svc = await service();
  const [image] = await importArchive(svc, join(work, 'oci.tar'));
  assert.equal(image?.id, busyboxId);
  const info = await svc.get('airgap.example/tools/busybox:1.0');
  assert.equal(info?.id, busyboxId);
  assert.deepEqual(info?.repoTags, ['airgap.example/tools/busybox:1.0']);
  assert.ok(readdirSync(svc.disksDir).includes(`${busyboxId.slice(7)}.erofs`));
});

test('a docker archive (docker save format) imports with its RepoTags', async () => {
  const svc = await service();
  const [image] = await importArchive(svc, join(work, 'docker.tar'));
  assert.equal(image?.id, busyboxId);
  assert.deepEqual((await svc.get(busyboxId))?.repoTags, ['airgap.example/tools/busybox:docker']);
});

test('--name names an archive that carries no name; a gzip-compressed archive works too', async () => {
  const svc = await service();
  const [plain] = await importArchive(svc, join(work, 'unnamed.tar'));
  assert.deepEqual([plain?.id, plain?.names], [busyboxId, []]);
  const gz = join(work, 'unnamed.tar.gz');
  writeFileSync(gz, gzipSync(execFileSync('cat', [join(work, 'unnamed.tar')], { maxBuffer: 64 << 20 })));
  await importArchive(svc, gz, { name: 'airgap.example/renamed:v2' });
  assert.deepEqual((await svc.get(busyboxId))?.repoTags, ['airgap.example/renamed:v2']);
});

test('the CLI imports into --root and prints the id and names', async () => {
  const root = mkdtempSync(join(work, 'cli-root-'));
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'image', 'import', '--root', root, join(work, 'oci.tar')], {
    cwd: REPO_ROOT, env: { ...process.env, PODVISOR_LOG_LEVEL: 'warn' },
  });
  assert.equal(stdout.trim(), `${busyboxId} airgap.example/tools/busybox:1.0`);
  const svc = new ImageService({ root });
  await svc.init();
  assert.equal((await svc.get('airgap.example/tools/busybox:1.0'))?.id, busyboxId);
});

test('archives that are not images, or whose blobs do not match their names, are refused and leave nothing', async () => {
  const svc = await service();
  const junk = join(work, 'junk.tar');
  writeFileSync(junk, await tarOf([{ name: 'hello.txt', body: 'not an image' }]));
  await assert.rejects(importArchive(svc, junk), (e) => isPodvisorError(e, 'INVALID_ARGUMENT') && e.message.includes('neither an OCI archive'));

  const forged = join(work, 'forged.tar');
  writeFileSync(forged, await tarOf([
    { name: 'oci-layout', body: '{"imageLayoutVersion":"1.0.0"}' },
    { name: `blobs/sha256/${'ab'.repeat(32)}`, body: 'these bytes do not hash to their name' },
    { name: 'index.json', body: '{"schemaVersion":2,"manifests":[]}' },
  ]));
  await assert.rejects(importArchive(svc, forged), (e) => isPodvisorError(e, 'FAILED_PRECONDITION') && e.message.includes('digest mismatch'));
  await assert.rejects(importArchive(svc, join(work, 'missing.tar')), (e) => isPodvisorError(e, 'NOT_FOUND'));
  assert.deepEqual(await svc.store.list(), []);
  assert.deepEqual(readdirSync(svc.store.ingestDir), []);
  assert.deepEqual(await svc.list(), []);
});

test('a malicious layer in an archive is refused like one from a registry', async () => {
  const tar = await tarOf([{ name: '../escape', body: 'x' }]);
  const { sha256Digest } = await import('../../src/image/digest.js');
  await pushImage(reg, 'import/evil', 'latest', [{ data: gzipSync(tar), diffId: sha256Digest(tar), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }]);
  const archive = join(work, 'evil.tar');
  execFileSync('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${reg.host}/import/evil:latest`, `oci-archive:${archive}:evil.example/evil:1`]);
  const svc = await service();
  await assert.rejects(importArchive(svc, archive), (e) => isPodvisorError(e, 'FAILED_PRECONDITION') && e.message.includes('refusing entry'));
  assert.deepEqual(await svc.store.list(), []);
  assert.deepEqual(await svc.list(), []);
});
