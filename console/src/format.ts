// How the console writes numbers, times and enum names, and how it lays out per-day series:
// pure functions (no DOM), so Vitest checks them (console/tests/format.test.ts).

export function usd(micro: string | number): string {
  return `$${(Number(micro) / 1_000_000).toFixed(4)}`;
}

export function when(ts: string | undefined | null): string {
  return ts ? new Date(ts).toISOString().replace("T", " ").slice(0, 19) : "—";
}

const ENUM_PREFIX = /^(EXECUTION_STATUS|CIRCUIT_STATE|PACK_STATUS|VAULT_STATE|EXCLUSION_REASON|STRATEGY)_/;

/** An enum value's name without its type's prefix (`CIRCUIT_STATE_OPEN` → `OPEN`). */
export function short(name: string): string {
  return name.replace(ENUM_PREFIX, "");
}

/** The UTC day `offset` days before `now`, as "YYYY-MM-DD". */
export function day(offset: number, now: Date = new Date()): string {
  const d = new Date(now.getTime());
  d.setUTCDate(d.getUTCDate() - offset);
  return d.toISOString().slice(0, 10);
}

/** One point per day from `first` to `last` (inclusive), 0 where `rows` has none: the
 * usage API answers only the days with usage, and a plot of those alone would draw one busy
 * day as wide as a month. */
export function daily<R extends { day: string }>(
  rows: R[],
  first: string,
  last: string,
  value: (row: R) => number,
): [string, number][] {
  const sums = new Map<string, number>();
  for (const r of rows) sums.set(r.day, (sums.get(r.day) ?? 0) + value(r));
  const out: [string, number][] = [];
  const d = new Date(`${first}T00:00:00Z`);
  for (let key = first; key <= last; key = d.toISOString().slice(0, 10)) {
    out.push([key, sums.get(key) ?? 0]);
    d.setUTCDate(d.getUTCDate() + 1);
  }
  return out;
}
