// Runs every variant a scenario declares and lays the reports side by side in one.

import type { Report } from '../report/schema.ts';
import type { ScenarioVariant } from './scenario.ts';
import { simulate } from './world.ts';

/** One report for all variants: migrations and workloads tagged with their variant. */
export function mergeReports(name: string, seed: number, reports: Report[]): Report {
  return {
    scenario: name,
    seed,
    world: 'sim',
    migrations: reports.flatMap((r) => r.migrations),
    workloads: reports.flatMap((r) => r.workloads),
  };
}

export function simulateVariants(variants: ScenarioVariant[], seed: number): Report {
  const reports = variants.map((v) => simulate(v.scenario, { seed, variant: v.name }));
  return mergeReports(variants[0].scenario.name, seed, reports);
}
