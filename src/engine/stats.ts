// Per-migration counters both engines fill in; drivers turn them into the report.

import type { PageKind } from './messages.ts';

export type Outcome = 'completed' | 'aborted' | 'failed';

export type PagesByKind = Record<PageKind | 'zero', number>;

export interface SourceStats {
  bytesSent: number;
  pagesSent: PagesByKind;
  rounds: number;
  /** Pages in each precopy round, in order. */
  roundPages: number[];
  /** When each precopy round ended, ms since the migration started. */
  roundEndMs: number[];
  /** Bandwidth the stop rule last used, bytes/s. */
  bandwidth: number;
  /** Demanded pages sent again on the urgent lane because their first copy was still queued. */
  demandResends: number;
}

export function newSourceStats(): SourceStats {
  return {
    bytesSent: 0,
    pagesSent: { bulk: 0, urgent: 0, prepaged: 0, resent: 0, zero: 0 },
    rounds: 0,
    roundPages: [],
    roundEndMs: [],
    bandwidth: 0,
    demandResends: 0,
  };
}

export interface DestinationStats {
  remoteFaults: number;
  /** Latency of each remote fault, request to arrival, in microseconds. */
  faultLatencyUs: number[];
  /** Arrivals dropped because the page was already present (never overwritten). */
  duplicatesDropped: number;
}

export function newDestinationStats(): DestinationStats {
  return { remoteFaults: 0, faultLatencyUs: [], duplicatesDropped: 0 };
}

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentiles and the mean; zeros for an empty sample. Sorts `values` in place. */
export function percentiles(values: number[]): Percentiles {
  if (values.length === 0) return { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  values.sort((a, b) => a - b);
  const at = (q: number) =>
    values[Math.min(values.length - 1, Math.max(0, Math.ceil(q * values.length) - 1))];
  let sum = 0;
  for (const v of values) sum += v;
  return {
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    max: values[values.length - 1],
    mean: sum / values.length,
  };
}

/** Counts per power-of-two bucket: [upper bound µs, count], from 16 µs up. */
export function histogram(valuesUs: number[]): [number, number][] {
  if (valuesUs.length === 0) return [];
  const counts = new Map<number, number>();
  let top = 16;
  for (const v of valuesUs) {
    let b = 16;
    while (b < v) b *= 2;
    counts.set(b, (counts.get(b) ?? 0) + 1);
    if (b > top) top = b;
  }
  const out: [number, number][] = [];
  for (let b = 16; b <= top; b *= 2) out.push([b, counts.get(b) ?? 0]);
  return out;
}
