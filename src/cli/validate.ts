import { table } from '../report/summary.ts';
import { DatasetError, G5K_MODEL, type G5kModel, loadG5k } from '../sim/g5k.ts';
import { compareRuns } from '../sim/validation.ts';
import { UsageError } from './errors.ts';
import { writeJson } from './io.ts';

export interface ValidateOptions {
  data: string;
  json?: string;
  worst: number;
  scenarios?: string;
  efficiency?: number;
  setupMs?: number;
  interference?: number;
  hotPattern?: string;
}

/** "1-12" or "3,5,7-9" → predicate on scenario numbers. */
export function parseRange(text: string): (n: number) => boolean {
  const parts = text.split(',').map((p) => {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(p);
    if (!m) throw new UsageError(`--scenarios: '${text}' is not a list of numbers and ranges like 1-12,15`);
    return [Number(m[1]), Number(m[2] ?? m[1])] as const;
  });
  return (n) => parts.some(([a, b]) => n >= a && n <= b);
}

const NODE_NAMES: Record<string, string> = { '0': 'south', '1': 'west', '2': 'north', '3': 'east' };

function interferenceText(model: G5kModel): string {
  const nodes = Object.entries(model.nodeInterference).map(([n, x]) => `${NODE_NAMES[n] ?? n} ${x}`);
  return nodes.length === 0
    ? String(model.duplexInterference)
    : `${model.duplexInterference}, ${nodes.join(', ')}`;
}

export function validateCommand(dataset: string, opts: ValidateOptions): void {
  if (dataset !== 'g5k') throw new UsageError(`unknown dataset '${dataset}' (known: g5k)`);
  if (!(opts.worst >= 0)) throw new UsageError('--worst must be a number ≥ 0');
  const hot = opts.hotPattern ?? G5K_MODEL.hotPattern;
  if (!['none', 'burst', 'sweep', 'once'].includes(hot))
    throw new UsageError(`--hot-pattern: '${hot}' is not one of none, burst, sweep, once`);
  const model: G5kModel = {
    ...G5K_MODEL,
    efficiency: opts.efficiency ?? G5K_MODEL.efficiency,
    setupMs: opts.setupMs ?? G5K_MODEL.setupMs,
    duplexInterference: opts.interference ?? G5K_MODEL.duplexInterference,
    // one value on the command line stands for every node
    nodeInterference: opts.interference === undefined ? G5K_MODEL.nodeInterference : {},
    hotPattern: hot as G5kModel['hotPattern'],
  };
  if (!(model.efficiency > 0 && model.efficiency <= 1))
    throw new UsageError('--efficiency must be in (0, 1]');
  if (!(model.setupMs >= 0)) throw new UsageError('--setup-ms must be ≥ 0');
  if (!(model.duplexInterference >= 0 && model.duplexInterference < 1))
    throw new UsageError('--interference must be in [0, 1)');
  let runs: ReturnType<typeof loadG5k>;
  try {
    runs = loadG5k(opts.data, model, opts.scenarios ? parseRange(opts.scenarios) : undefined);
  } catch (e) {
    if (e instanceof DatasetError) throw new UsageError(e.message);
    throw e;
  }
  const r = compareRuns(runs, { worst: opts.worst, model });
  const pct = (x: number) => `${x.toFixed(1)}%`;
  console.log(
    `Replayed ${runs.length} measured runs, ${r.overall.count} migrations ` +
      `(efficiency ${model.efficiency.toFixed(4)}, setup ${model.setupMs} ms, duplex interference ${interferenceText(model)}, hot set: ${model.hotPattern}).\n`,
  );
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
  if (r.overall.failed > 0)
    console.log(
      `\n${r.overall.failed} simulated migrations did not complete (counted with their full simulated time).`,
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
