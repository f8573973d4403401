import { loadConfig } from '../config/config.js';
import { importArchive } from '../image/archive-import.js';
import { ImageService } from '../image/image-service.js';
import { parseCommandArgs, EXIT, type CliContext } from './cli-context.js';
import { printJson, progress } from './output.js';

export const IMAGE_IMPORT_USAGE = `Usage: podvisor image import [--config FILE] [--root DIR] [--name REF] [--json] ARCHIVE

Loads an OCI-archive or docker-archive tarball (plain, gzip or zstd) into the node's image store
(<root>/images) and builds its erofs disk, without a registry. A running podvisord sees the image
on its next image request. --name names (or renames) the image; needed when the archive has no name.
`;

/**
 * `podvisor image import`: works on the image store directly (the daemon's socket is not needed),
 * so an air-gapped node can be seeded before podvisord runs.
 */
export async function imageImport(ctx: CliContext, usage: string): Promise<number> {
  const args = parseCommandArgs(ctx, usage, {
    config: { type: 'string' }, root: { type: 'string' }, name: { type: 'string' }, json: { type: 'boolean' },
  }, { min: 1, max: 1 });
  if (!args) return EXIT.ok;
  const v = args.values as { config?: string; root?: string; name?: string; json?: boolean };
  const shown = progress(!v.json);
  const config = loadConfig(v.config, v.root !== undefined ? { root: v.root } : {});
  const svc = new ImageService({ root: config.root, registry: config.registry, maxUnpackedBytes: config.images.maxUnpackedBytes });
  await svc.init({ clearTemporary: false });
  shown.step(`importing ${args.positionals[0]}: reading the archive, unpacking layers, building the erofs disk…`);
  let imported;
  try {
    imported = await importArchive(svc, args.positionals[0]!, v.name !== undefined ? { name: v.name } : {});
  } finally {
    shown.done();
  }
  if (v.json) printJson(imported.map((i) => ({ id: i.id, names: i.names })));
  else for (const image of imported) console.log(`${image.id}${image.names.length ? ` ${image.names.join(' ')}` : ''}`);
  return EXIT.ok;
}
