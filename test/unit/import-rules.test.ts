/**
 * The import rules of docs/ARCHITECTURE.md, checked on the code's own import
 * statements (static `import`/`export ... from` and `import(...)`, type-only
 * ones included: a type import still ties two files' meanings together).
 *
 * - Domain modules never import the CRI transport (src/cri/): CRI words stay there.
 * - The CRI transport never reaches up into the composition root (src/daemon/, src/cli/).
 * - No import cycle between hand-written modules of src/ and agent/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Folders (relative to the repository root) whose code must not import src/cri/. */
const DOMAIN = [
  'src/pod', 'src/vm', 'src/image', 'src/network', 'src/streaming', 'src/runtime',
  'src/agent-client', 'src/agent-protocol', 'src/ttrpc', 'src/config', 'src/util', 'agent',
  'src/metrics', 'src/admin', 'src/debug',
];
const GENERATED = 'src/cri/generated';

function sourceFiles(dir: string): string[] {
  const abs = join(ROOT, dir);
  let entries: string[];
  try {
    entries = readdirSync(abs);
  } catch {
    return [];
  }
  return entries.flatMap((name) => {
    const rel = join(dir, name);
    if (rel === GENERATED || name === 'node_modules') return [];
    if (statSync(join(ROOT, rel)).isDirectory()) return sourceFiles(rel);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [rel.split(sep).join('/')] : [];
  });
}

const SPECIFIER = /(?:^|[\s;])(?:import|export)\s(?:[^'";]*?\sfrom\s)?['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

/** The repository files one file imports (relative specifiers only; packages are not our modules). */
export function importsOf(file: string, text: string): string[] {
  const out: string[] = [];
  // Comments may quote import lines; drop them first.
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  for (const m of code.matchAll(SPECIFIER)) {
    const spec = m[1] ?? m[2];
    if (!spec || !spec.startsWith('.')) continue;
    const target = relative(ROOT, resolve(ROOT, dirname(file), spec)).split(sep).join('/').replace(/\.js$/, '.ts');
    out.push(target);
  }
  return out;
}

function importGraph(): Map<string, string[]> {
  const files = [...sourceFiles('src'), ...sourceFiles('agent')];
  const known = new Set(files);
  return new Map(files.map((f) => [f, importsOf(f, readFileSync(join(ROOT, f), 'utf8')).filter((t) => known.has(t))]));
}

/** Strongly connected components with more than one file (or a file importing itself): the import cycles. */
export function cycles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(scc.sort());
    }
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return found;
}

test('the checker sees import, export-from, type-only and dynamic imports, and finds cycles', () => {
  const text = [
    "import { a } from './a.js';",
    "import type { B } from '../b/b.js';",
    "export { c } from './c.js';",
    "export * from './d.js';",
    "import './side-effect.js';",
    "const e = await import('./e.js');",
    "import pino from 'pino';",
    "// import { x } from './commented.js';",
  ].join('\n');
  assert.deepEqual(importsOf('src/x/y.ts', text), ['src/x/a.ts', 'src/b/b.ts', 'src/x/c.ts', 'src/x/d.ts', 'src/x/side-effect.ts', 'src/x/e.ts']);
  const g = new Map([['a', ['b']], ['b', ['c']], ['c', ['a']], ['d', ['a']], ['e', ['e']]]);
  assert.deepEqual(cycles(g), [['a', 'b', 'c'], ['e']]);
});

test('domain modules never import src/cri/', () => {
  const graph = importGraph();
  assert.ok(graph.size > 50, `expected to read the whole tree, read ${graph.size} files`);
  const breaks: string[] = [];
  for (const [file, targets] of graph) {
    if (!DOMAIN.some((d) => file.startsWith(`${d}/`))) continue;
    for (const t of targets) if (t.startsWith('src/cri/')) breaks.push(`${file} imports ${t}`);
  }
  assert.deepEqual(breaks, [], 'CRI words and types stay in src/cri/: map them there (see docs/ARCHITECTURE.md, import rules)');
});

test('src/cri/ never imports the daemon or the CLI, which sit above it', () => {
  const breaks = [...importGraph()].flatMap(([file, targets]) => (file.startsWith('src/cri/')
    ? targets.filter((t) => t.startsWith('src/daemon/') || t.startsWith('src/cli/')).map((t) => `${file} imports ${t}`)
    : []));
  assert.deepEqual(breaks, [], 'what CRI handlers need from below goes in a domain module (src/runtime/, src/version.ts) and reaches them through CriServices');
});

test('no import cycle in src/ or agent/', () => {
  const found = cycles(importGraph());
  assert.deepEqual(found, [], `import cycles: ${found.map((c) => c.join(' <-> ')).join('; ')}: move the shared definition into a file both can import`);
});
