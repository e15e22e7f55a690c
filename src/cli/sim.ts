import { summarize } from '../report/summary.ts';
import { parseScenario } from '../sim/scenario.ts';
import { simulate } from '../sim/world.ts';
import { readText, writeJson } from './io.ts';

export function simCommand(file: string, opts: { seed: number; json?: string; quiet?: boolean }): void {
  const scenario = parseScenario(readText(file, 'scenario'), file);
  const report = simulate(scenario, { seed: opts.seed });
  if (!opts.quiet) console.log(summarize(report));
  if (opts.json) {
    writeJson(opts.json, report);
    if (!opts.quiet) console.log(`report written to ${opts.json}`);
  }
}
