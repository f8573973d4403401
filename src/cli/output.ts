/** Prints rows as an aligned table with upper-case headers (the CLI's human output). */
export function printTable<T>(rows: T[], columns: Array<[header: string, value: (row: T) => string | number | null | undefined]>): void {
  const cells = rows.map((r) => columns.map(([, f]) => { const v = f(r); return v === null || v === undefined || v === '' ? '-' : String(v); }));
  const widths = columns.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (values: string[]) => values.map((v, i) => (i === values.length - 1 ? v : v.padEnd(widths[i]!))).join('  ');
  process.stdout.write(line(columns.map(([h]) => h)) + '\n');
  for (const c of cells) process.stdout.write(line(c) + '\n');
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** 3725 → "1h2m", for uptimes. */
export function duration(seconds: number | null): string {
  if (seconds === null) return '-';
  if (seconds < 60) return `${seconds}s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m}m${seconds % 60}s`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h${m % 60}m` : `${Math.floor(h / 24)}d${h % 24}h`;
}

/** Progress on stderr, only on a terminal; `--json` and pipes stay quiet. */
export function progress(enabled: boolean): { step(text: string): void; done(): void } {
  const tty = enabled && process.stderr.isTTY;
  return {
    step(text) {
      if (tty) process.stderr.write(`\r\x1b[K${text}`);
    },
    done() {
      if (tty) process.stderr.write('\r\x1b[K');
    },
  };
}
