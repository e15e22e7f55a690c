import { table } from '../report/summary.ts';
import { DatasetError, loadG5k } from '../sim/g5k.ts';
import { compareRuns } from '../sim/validation.ts';
import { UsageError } from './errors.ts';
import { writeJson } from './io.ts';

export function validateCommand(dataset: string, opts: { data: string; json?: string; worst: number }): void {
  if (dataset !== 'g5k') throw new UsageError(`unknown dataset '${dataset}' (known: g5k)`);
  if (!(opts.worst >= 0)) throw new UsageError('--worst must be a number ≥ 0');
  let runs: ReturnType<typeof loadG5k>;
  try {
    runs = loadG5k(opts.data);
  } catch (e) {
    if (e instanceof DatasetError) throw new UsageError(e.message);
    throw e;
  }
  const r = compareRuns(runs, { worst: opts.worst });
  const pct = (x: number) => `${x.toFixed(1)}%`;
  console.log(`Replayed ${runs.length} measured runs, ${r.overall.count} migrations.\n`);
  console.log(
    table(
      ['configuration', 'count', 'measured mean', 'simulated mean', 'MAPE', 'p90 error'],
      [
        ...r.groups.map((g) => [
          g.group,
          String(g.count),
          `${g.meanMeasuredS.toFixed(1)} s`,
          `${g.meanSimulatedS.toFixed(1)} s`,
          pct(g.mapePct),
          pct(g.p90Pct),
        ]),
        ['overall', String(r.overall.count), '', '', pct(r.overall.mapePct), pct(r.overall.p90Pct)],
      ],
    ),
  );
  if (r.worst.length > 0) {
    console.log('\nworst cases:');
    console.log(
      table(
        ['run', 'vm', 'configuration', 'measured', 'simulated', 'error'],
        r.worst.map((c) => [
          c.run,
          c.vm,
          c.group,
          `${c.measuredS} s`,
          `${c.simulatedS.toFixed(1)} s`,
          pct(c.errorPct),
        ]),
      ),
    );
  }
  if (opts.json) writeJson(opts.json, r);
}
