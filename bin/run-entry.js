// Shared by the bin/ launchers. podvisor runs its TypeScript through tsx rather
// than from a compiled dist/: there is no build step to forget, so what runs is
// always the source that was type-checked and tested.
import { register } from 'tsx/esm/api';

export async function runEntry(relative) {
  register();
  await import(new URL(`../src/${relative}.ts`, import.meta.url).href);
}
