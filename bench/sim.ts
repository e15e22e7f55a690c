// Simulator benchmark: wall time, peak memory and event rate for the scaling cases.
// Usage: npm run bench:sim [-- --json FILE] [-- --only NAME]
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { postcopyScenario, ringScenario } from '../src/sim/generators.ts';
import { parseScenarioVariants, type Scenario } from '../src/sim/scenario.ts';
import { simulateVariants } from '../src/sim/variants.ts';
import { World } from '../src/sim/world.ts';

const { values } = parseArgs({
  options: { json: { type: 'string' }, only: { type: 'string', multiple: true } },
});

interface Case {
  name: string;
  migrations: number;
  wallMs: number;
  peakRssBytes: number;
  eventsPerSec: number;
  [k: string]: unknown;
}

function measure(name: string, build: () => Scenario): Case {
  globalThis.gc?.();
  const rssBefore = process.memoryUsage().rss;
  let peak = rssBefore;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  const t0 = performance.now();
  const scenario = build();
  const world = new World(scenario, { seed: 1 });
  const report = world.run();
  const wallMs = performance.now() - t0;
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  const completed = report.migrations.filter((m) => m.outcome === 'completed').length;
  const c: Case = {
    name,
    migrations: report.migrations.length,
    wallMs: Math.round(wallMs),
    peakRssBytes: peak,
    eventsPerSec: Math.round(world.queue.processed / (wallMs / 1000)),
    completed,
    bytesPerMigration: Math.round((peak - rssBefore) / report.migrations.length),
    meanTotalTimeS:
      report.migrations.reduce((s, m) => s + m.totalTimeMs, 0) / report.migrations.length / 1000,
  };
  console.log(
    `${name.padEnd(12)} ${String(c.migrations).padStart(6)} migrations  ${String(c.wallMs).padStart(6)} ms wall  ` +
      `${(peak / 2 ** 20).toFixed(0).padStart(5)} MiB peak RSS  ${((c.bytesPerMigration as number) / 1024).toFixed(1)} KiB/migration  ` +
      `${(c.eventsPerSec / 1e6).toFixed(2)} M events/s  (${completed} completed, mean ${(c.meanTotalTimeS as number).toFixed(1)} s)`,
  );
  return c;
}

const cases: [string, () => Scenario][] = [
  ['ring-1000', () => ringScenario(1000)],
  ['ring-10000', () => ringScenario(10000)],
  ['postcopy-4g', () => postcopyScenario(4096, 60)],
];
// One unreported run first, so the JIT has compiled the hot paths before anything is timed.
new World(ringScenario(1000), { seed: 2 }).run();
const results = cases.filter(([n]) => !values.only || values.only.includes(n)).map(([n, b]) => measure(n, b));
const r1 = results.find((c) => c.name === 'ring-1000');
const r10 = results.find((c) => c.name === 'ring-10000');
if (r1 && r10)
  console.log(`ring-10000 / ring-1000 wall ratio: ${(r10.wallMs / r1.wallMs).toFixed(1)} (linear = 10)`);

// The web and database experiments, every variant, spread over the cores as `ferry sim` does.
if (!values.only || values.only.includes('paper')) {
  const files = ['scenarios/paper-web.yaml', 'scenarios/paper-db.yaml'];
  const t0 = performance.now();
  const variants = files.flatMap((f) =>
    parseScenarioVariants(readFileSync(new URL(`../${f}`, import.meta.url), 'utf8'), f),
  );
  const runs = variants.length;
  await simulateVariants(variants, { seed: 1 });
  const wallMs = Math.round(performance.now() - t0);
  console.log(
    `${'paper'.padEnd(12)} ${String(runs).padStart(6)} variants    ${String(wallMs).padStart(6)} ms wall  (both experiment files)`,
  );
  results.push({
    name: 'paper',
    migrations: runs,
    wallMs,
    peakRssBytes: process.memoryUsage().rss,
    eventsPerSec: 0,
  });
}
if (values.json) writeFileSync(values.json, `${JSON.stringify({ cases: results }, null, 2)}\n`);
