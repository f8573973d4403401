import { unary } from '../../cri/client.js';
import { imageImport, IMAGE_IMPORT_USAGE } from '../image-import.js';
import { parseCommandArgs, usageError, CliError, EXIT, type CliCommand, type CliContext } from '../cli-context.js';
import { printJson, printTable } from '../output.js';

const USAGE = `Usage: podvisor image COMMAND

Commands:
  import ARCHIVE   load an OCI or docker archive into the store (no daemon needed; see image import --help)
  ls [--json]      images in podvisord's store
  rm IMAGE...      remove images (tag, name@digest, id or id prefix)
  prune [--json]   remove every image no container (running or not) uses
`;

const LS_USAGE = 'Usage: podvisor image ls [--json]\n\nImages in podvisord\'s store: id, tags, size.\n';
const RM_USAGE = 'Usage: podvisor image rm IMAGE...\n\nRemoves images from podvisord\'s store (tag, name@digest, id or id prefix).\nExit status 3 when an image is not there.\n';
const PRUNE_USAGE = 'Usage: podvisor image prune [--json]\n\nRemoves every image that no container on this node (in any state) uses.\n';

/** Image commands other than import go through the CRI ImageService, as kubelet's image GC does. */
export const image: CliCommand = {
  summary: 'import | ls | rm | prune images',
  usage: USAGE,
  async run(ctx) {
    const [sub, ...rest] = ctx.args;
    const sctx = { ...ctx, args: rest };
    switch (sub) {
      case 'import': return imageImport(sctx, IMAGE_IMPORT_USAGE);
      case 'ls': return list(sctx);
      case 'rm': return remove(sctx);
      case 'prune': return prune(sctx);
      case undefined: case '-h': case '--help':
        process.stdout.write(USAGE);
        return sub === undefined ? EXIT.usage : EXIT.ok;
      default: throw usageError(`unknown image command "${sub}"`, USAGE);
    }
  },
};

async function list(ctx: CliContext): Promise<number> {
  const args = parseCommandArgs(ctx, LS_USAGE, { json: { type: 'boolean' } }, { min: 0, max: 0 });
  if (!args) return EXIT.ok;
  const { images } = await unary(ctx.cri().image, 'ListImages', {});
  const rows = images.map((i) => ({ id: i.id, tags: i.repo_tags, digests: i.repo_digests, sizeBytes: Number(i.size) }));
  if (args.values.json) printJson(rows);
  else printTable(rows, [['IMAGE ID', (r) => r.id.replace(/^sha256:/, '').slice(0, 12)], ['SIZE', (r) => `${(r.sizeBytes / 1024 / 1024).toFixed(1)}MiB`], ['TAGS', (r) => r.tags.join(', ')]]);
  return EXIT.ok;
}

async function remove(ctx: CliContext): Promise<number> {
  const args = parseCommandArgs(ctx, RM_USAGE, {}, { min: 1, max: 64 });
  if (!args) return EXIT.ok;
  let code: number = EXIT.ok;
  for (const ref of args.positionals) {
    // RemoveImage is idempotent in the CRI; a person asking to remove a missing image wants to know.
    const status = await unary(ctx.cri().image, 'ImageStatus', { image: { image: ref } });
    if (!status.image?.id) {
      process.stderr.write(`podvisor: image "${ref}" not found\n`);
      code = EXIT.notFound;
      continue;
    }
    await unary(ctx.cri().image, 'RemoveImage', { image: { image: status.image.id } });
    process.stdout.write(`removed ${status.image.id}\n`);
  }
  return code;
}

async function prune(ctx: CliContext): Promise<number> {
  const args = parseCommandArgs(ctx, PRUNE_USAGE, { json: { type: 'boolean' } }, { min: 0, max: 0 });
  if (!args) return EXIT.ok;
  const [{ images }, { containers }] = await Promise.all([
    unary(ctx.cri().image, 'ListImages', {}),
    unary(ctx.cri().runtime, 'ListContainers', {}),
  ]);
  const used = new Set(containers.map((c) => c.image_id || c.image_ref));
  const removed: string[] = [];
  for (const i of images) {
    if (used.has(i.id)) continue;
    try {
      await unary(ctx.cri().image, 'RemoveImage', { image: { image: i.id } });
      removed.push(i.id);
    } catch (e) {
      throw new CliError(EXIT.failed, `removing ${i.id}: ${(e as { details?: string }).details ?? (e as Error).message}`);
    }
  }
  if (args.values.json) printJson({ removed, kept: images.length - removed.length });
  else process.stdout.write(`${removed.map((id) => `removed ${id}\n`).join('')}${removed.length} removed, ${images.length - removed.length} in use\n`);
  return EXIT.ok;
}
