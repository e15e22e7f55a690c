import { compareVariants, summarize } from '../report/summary.ts';
import { parseScenarioVariants } from '../sim/scenario.ts';
import { simulateVariants } from '../sim/variants.ts';
import { readText, writeJson } from './io.ts';

export async function simCommand(
  file: string,
  opts: { seed: number; json?: string; quiet?: boolean; threads?: number },
): Promise<void> {
  const variants = parseScenarioVariants(readText(file, 'scenario'), file);
  const progress = !opts.quiet && variants.length > 1 && process.stderr.isTTY;
  const report = await simulateVariants(variants, {
    seed: opts.seed,
    threads: opts.threads,
    onDone: progress
      ? (name, done, total) => process.stderr.write(`\r  ${done}/${total} variants (${name})\x1b[K`)
      : undefined,
  });
  if (progress) process.stderr.write('\r\x1b[K');
  if (!opts.quiet) {
    if (variants.length > 1 || report.workloads.length > 0) {
      console.log(
        `${report.scenario} (sim, seed ${opts.seed}): ${variants.length} variant${variants.length === 1 ? '' : 's'}`,
      );
      console.log(compareVariants(report));
      console.log(
        'throughput columns: the workload’s rate in the first 1, 5 and 10 s after switchover, relative to before the migration',
      );
    } else console.log(summarize(report));
  }
  if (opts.json) {
    writeJson(opts.json, report);
    if (!opts.quiet) console.log(`report written to ${opts.json}`);
  }
}
