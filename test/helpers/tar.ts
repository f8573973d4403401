import { pack as tarPack, type Header } from 'tar-stream';

/** One tar entry: a tar-stream header plus an optional text body. */
export type Entry = Partial<Header> & { name: string; body?: string };

/** A tar stream built in memory with tar-stream's packer (for hand-made, including malicious, layers). */
export async function tarOf(entries: Entry[]): Promise<Buffer> {
  const p = tarPack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((r) => p.on('end', () => r()));
  for (const { body, ...header } of entries) {
    await new Promise<void>((resolve, reject) => p.entry(header as Header, body ?? '', (e) => (e ? reject(e) : resolve())));
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}
