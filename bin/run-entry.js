// Shared by the bin/ launchers: runs the compiled entry point (npm run build)
// and, in a checkout without a build, the TypeScript source through tsx.
import { existsSync } from 'node:fs';

export async function runEntry(relative) {
  const compiled = new URL(`../dist/src/${relative}.js`, import.meta.url);
  if (existsSync(compiled)) {
    await import(compiled.href);
    return;
  }
  const { register } = await import('tsx/esm/api');
  register();
  await import(new URL(`../src/${relative}.ts`, import.meta.url).href);
}
