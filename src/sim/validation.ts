// Simulated vs measured: replays every measured run and reports the error of the
// simulated migration durations, per configuration and overall.

import { G5K_MODEL, type G5kModel, type G5kRun } from './g5k.ts';
import { simulate } from './world.ts';

export interface Comparison {
  run: string;
  vm: string;
  group: string;
  measuredS: number;
  simulatedS: number;
  errorPct: number;
}

export interface GroupStats {
  group: string;
  count: number;
  mapePct: number;
  p90Pct: number;
  meanMeasuredS: number;
  meanSimulatedS: number;
}

export interface ValidationResult {
  /** `failed`: simulated migrations that did not complete (counted with their full simulated time). */
  overall: { count: number; failed: number; mapePct: number; p90Pct: number };
  groups: GroupStats[];
  worst: Comparison[];
  model: G5kModel;
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function stats(errors: number[]): { mapePct: number; p90Pct: number } {
  const s = [...errors].sort((a, b) => a - b);
  return { mapePct: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length), p90Pct: quantile(s, 0.9) };
}

export function compareRuns(
  runs: G5kRun[],
  opts: { seed?: number; worst?: number; model?: G5kModel } = {},
): ValidationResult {
  const all: Comparison[] = [];
  let failed = 0;
  for (const run of runs) {
    const report = simulate(run.scenario, { seed: opts.seed ?? 1 });
    run.measured.forEach((m, i) => {
      const sim = report.migrations[i];
      // a migration that never completed counts with the time the simulation gave it
      const simulatedS = sim.totalTimeMs / 1000;
      if (sim.outcome !== 'completed') failed++;
      all.push({
        run: run.id,
        vm: m.vm,
        group: `${m.memUsedMB} MB × ${m.bwMbps} Mbit/s`,
        measuredS: m.durationS,
        simulatedS,
        errorPct: (Math.abs(simulatedS - m.durationS) / m.durationS) * 100,
      });
    });
  }
  const groups = [...new Set(all.map((c) => c.group))].sort().map((g) => {
    const cs = all.filter((c) => c.group === g);
    const mean = (f: (c: Comparison) => number) => cs.reduce((s, c) => s + f(c), 0) / cs.length;
    return {
      group: g,
      count: cs.length,
      ...stats(cs.map((c) => c.errorPct)),
      meanMeasuredS: mean((c) => c.measuredS),
      meanSimulatedS: mean((c) => c.simulatedS),
    };
  });
  return {
    overall: { count: all.length, failed, ...stats(all.map((c) => c.errorPct)) },
    groups,
    worst: [...all].sort((a, b) => b.errorPct - a.errorPct).slice(0, opts.worst ?? 10),
    model: opts.model ?? G5K_MODEL,
  };
}
