import { parseArgs } from 'node:util';
import { loadConfig } from '../config/config.js';
import { invalidArgument } from '../errors.js';
import { importArchive } from '../image/archive-import.js';
import { ImageService } from '../image/image-service.js';

export const IMAGE_USAGE = `Usage: podvisor image import [--config FILE] [--root DIR] [--name REF] ARCHIVE

Loads an OCI-archive or docker-archive tarball (plain, gzip or zstd) into the node's image store
(<root>/images) and builds its erofs disk, without a registry. A running podvisord sees the image
on its next image request. --name names (or renames) the image; needed when the archive has no name.
`;

/**
 * `podvisor image import`: works on the image store directly (the daemon's socket is not needed),
 * so an air-gapped node can be seeded before podvisord runs.
 */
export async function imageCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(IMAGE_USAGE);
    return;
  }
  if (sub !== 'import') throw invalidArgument(`unknown image command "${sub}"\n\n${IMAGE_USAGE}`);
  const { values, positionals } = parseArgs({
    args: rest,
    options: { config: { type: 'string' }, root: { type: 'string' }, name: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help) {
    process.stdout.write(IMAGE_USAGE);
    return;
  }
  if (positionals.length !== 1) throw invalidArgument(`expected one archive file\n\n${IMAGE_USAGE}`);
  const config = loadConfig(values.config, values.root !== undefined ? { root: values.root } : {});
  const svc = new ImageService({ root: config.root, registry: config.registry, maxUnpackedBytes: config.images.maxUnpackedBytes });
  await svc.init({ clearTemporary: false });
  const imported = await importArchive(svc, positionals[0]!, values.name !== undefined ? { name: values.name } : {});
  for (const image of imported) console.log(`${image.id}${image.names.length ? ` ${image.names.join(' ')}` : ''}`);
}
