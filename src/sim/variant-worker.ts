// Runs simulator variants sent by the parent thread, one at a time.
import { parentPort } from 'node:worker_threads';
import type { Scenario } from './scenario.ts';
import { simulate } from './world.ts';

parentPort!.on('message', (job: { id: number; scenario: Scenario; variant: string; seed: number }) => {
  try {
    const report = simulate(job.scenario, { seed: job.seed, variant: job.variant });
    parentPort!.postMessage({ id: job.id, report });
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: (e as Error).stack ?? String(e) });
  }
});
