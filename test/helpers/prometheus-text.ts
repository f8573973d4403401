/**
 * A small parser of the Prometheus text exposition format (version 0.0.4), for
 * tests that scrape /metrics: `# HELP`/`# TYPE` lines and samples
 * `name{label="value",...} value [timestamp]`, label values with \\ \" \n
 * escapes. Strict: a line it cannot read throws, so a malformed exposition
 * fails the test rather than being skipped.
 */
export interface Sample { name: string; labels: Record<string, string>; value: number }
export interface Family { name: string; type: string; help: string; samples: Sample[] }

const SUFFIXES: Record<string, string[]> = { histogram: ['_bucket', '_sum', '_count'], summary: ['_sum', '_count'] };

export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const family = (name: string) => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, type: 'untyped', help: '', samples: [] }));
    return f;
  };
  for (const [i, line] of text.split('\n').entries()) {
    if (line.trim() === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(line);
    if (meta) {
      if (meta[1] === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(meta[3]!)) throw new Error(`line ${i + 1}: unknown type ${meta[3]}`);
        family(meta[2]!).type = meta[3]!;
      } else family(meta[2]!).help = meta[3]!;
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(line);
    if (!m) throw new Error(`line ${i + 1} is not a sample: ${line}`);
    const value = m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : Number(m[4]);
    if (Number.isNaN(value) && m[4] !== 'NaN') throw new Error(`line ${i + 1}: value ${m[4]} is not a number`);
    const sample = { name: m[1]!, labels: parseLabels(m[3] ?? '', i + 1), value };
    familyOf(families, sample.name, i + 1).samples.push(sample);
  }
  return families;
}

/** The family a sample belongs to: its own name, or a histogram/summary's name without _bucket/_sum/_count. */
function familyOf(families: Map<string, Family>, name: string, line: number): Family {
  const own = families.get(name);
  if (own) return own;
  for (const f of families.values()) {
    if ((SUFFIXES[f.type] ?? []).some((s) => name === f.name + s)) return f;
  }
  throw new Error(`line ${line}: sample ${name} has no # TYPE line`);
}

function parseLabels(text: string, line: number): Record<string, string> {
  const labels: Record<string, string> = {};
  const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y;
  let at = 0;
  while (at < text.length) {
    re.lastIndex = at;
    const m = re.exec(text);
    if (!m) throw new Error(`line ${line}: labels {${text}} do not parse at ${at}`);
    labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    at = re.lastIndex;
  }
  return labels;
}
