// How a workload fared across a migration, from its completed operations per 100 ms bin:
// the rate before the migration, the rate right after the switchover relative to it, and
// how long it took to come back. Both worlds report these the same way.

export const BIN_MS = 100;

/** Mean ops/s over [from, to) ms, from operations counted per bin. */
export function rate(opsPerBin: readonly number[], from: number, to: number): number {
  const a = Math.max(0, Math.floor(from / BIN_MS));
  const b = Math.floor(to / BIN_MS);
  if (b <= a) return 0;
  let n = 0;
  for (let i = a; i < b; i++) n += opsPerBin[i] ?? 0;
  return n / (((b - a) * BIN_MS) / 1000);
}

export interface AroundSwitchover {
  /** Ops/s over the (up to) 5 s before the migration began, leaving out the first second. */
  baseline: number;
  /** The first 1, 5 and 10 s after the switchover, as fractions of the baseline. */
  relative: { first1s: number; first5s: number; first10s: number } | null;
}

export function aroundSwitchover(
  opsPerBin: readonly number[],
  startMs: number,
  switchoverMs: number,
  endMs: number,
): AroundSwitchover {
  if (!(startMs > 0)) return { baseline: 0, relative: null };
  const baseline = rate(opsPerBin, Math.max(1000, startMs - 5000), startMs);
  if (switchoverMs < 0 || baseline <= 0) return { baseline, relative: null };
  const rel = (s: number) =>
    round3(rate(opsPerBin, switchoverMs, Math.min(endMs, switchoverMs + s * 1000)) / baseline);
  return { baseline, relative: { first1s: rel(1), first5s: rel(5), first10s: rel(10) } };
}

/**
 * Ms from the switchover until the rate over a 500 ms window is back to 90% of the
 * baseline; -1 if it never is before `endMs`.
 */
export function recoveryMs(
  opsPerBin: readonly number[],
  switchoverMs: number,
  baseline: number,
  endMs: number,
): number {
  if (switchoverMs < 0 || baseline <= 0) return -1;
  for (let t = switchoverMs; t + 500 <= endMs; t += BIN_MS)
    if (rate(opsPerBin, t, t + 500) >= 0.9 * baseline) return Math.max(0, t - switchoverMs);
  return -1;
}

export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
