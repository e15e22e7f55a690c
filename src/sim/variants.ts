// Runs every variant a scenario declares, spread over the machine's cores, and lays the
// reports side by side in one. Each variant is seeded on its own, so the result does not
// depend on how the runs were spread.

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
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

export interface VariantOptions {
  seed: number;
  /** Worker threads to use (default: one per core; 1 runs everything on this thread). */
  threads?: number;
  /** Called as each variant finishes. */
  onDone?: (variant: string, done: number, total: number) => void;
}

export async function simulateVariants(variants: ScenarioVariant[], opts: VariantOptions): Promise<Report> {
  const threads = Math.max(1, Math.min(opts.threads ?? availableParallelism(), variants.length));
  const reports: Report[] = new Array(variants.length);
  let done = 0;
  const finished = (i: number, r: Report) => {
    reports[i] = r;
    opts.onDone?.(variants[i].name, ++done, variants.length);
  };
  if (threads === 1) {
    variants.forEach((v, i) => {
      finished(i, simulate(v.scenario, { seed: opts.seed, variant: v.name }));
    });
  } else {
    let next = 0;
    const workers = Array.from(
      { length: threads },
      () => new Worker(new URL('./variant-worker.mjs', import.meta.url)),
    );
    try {
      await Promise.all(
        workers.map(
          (w) =>
            new Promise<void>((resolve, reject) => {
              const feed = () => {
                if (next >= variants.length) return resolve();
                const id = next++;
                w.postMessage({
                  id,
                  scenario: variants[id].scenario,
                  variant: variants[id].name,
                  seed: opts.seed,
                });
              };
              w.on('message', (m: { id: number; report?: Report; error?: string }) => {
                if (m.error) return reject(new Error(`variant '${variants[m.id].name}' failed: ${m.error}`));
                finished(m.id, m.report!);
                feed();
              });
              w.on('error', reject);
              feed();
            }),
        ),
      );
    } finally {
      await Promise.all(workers.map((w) => w.terminate()));
    }
  }
  return mergeReports(variants[0].scenario.name, opts.seed, reports);
}
