import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { compareVariants, formatBytes } from '../report/summary.ts';
import { type ScenarioVariant, validateScenario } from '../sim/scenario.ts';
import { mergeReports } from '../sim/variants.ts';
import { simulate } from '../sim/world.ts';
import { UsageError } from './errors.ts';
import { writeJson, writeText } from './io.ts';

const BAR = 30;

function bar(fraction: number): string {
  const n = Math.round(Math.max(0, Math.min(1, fraction)) * BAR);
  return `[${'#'.repeat(n)}${'.'.repeat(BAR - n)}]`;
}

export interface SimDemoOptions {
  mode: string;
  ram: number;
  vcpus: number;
  workload: string;
  json?: string;
  html: string;
}

/**
 * The demo in the simulator: a VM running a web server (or a database) under load
 * moves between two hosts over 1 Gbit/s. The migration is shown as it runs; the same
 * migration with blocking faults runs beside it for comparison, and both go into an HTML
 * report.
 */
export async function simDemo(opts: SimDemoOptions): Promise<void> {
  if (!['precopy', 'postcopy', 'hybrid'].includes(opts.mode))
    throw new UsageError(`--mode: '${opts.mode}' is not one of precopy, postcopy, hybrid`);
  if (!(Number.isInteger(opts.ram) && opts.ram >= 64))
    throw new UsageError(`--ram: '${opts.ram}' must be a whole number of MiB ≥ 64`);
  if (!(Number.isInteger(opts.vcpus) && opts.vcpus >= 1 && opts.vcpus <= 64))
    throw new UsageError(`--vcpus: '${opts.vcpus}' must be a whole number from 1 to 64`);
  if (!['web', 'oltp', 'memtouch', 'idle'].includes(opts.workload))
    throw new UsageError(`--workload: '${opts.workload}' is not one of web, oltp, memtouch, idle`);
  const raw = (cooperative: boolean) => ({
    name: 'demo',
    durationS: 600,
    settleS: 8,
    hosts: [
      { name: 'src', nicMbps: 1000 },
      { name: 'dst', nicMbps: 1000 },
    ],
    vms: [
      {
        name: 'vm1',
        host: 'src',
        ramMiB: opts.ram,
        usedMiB: Math.round(opts.ram * 0.75),
        vcpus: opts.vcpus,
        workload:
          opts.workload === 'web'
            ? { kind: 'web', hotSetMiB: Math.max(1, Math.round(opts.ram / 8)) }
            : { kind: opts.workload },
        dirty: { rateMBps: 2 },
      },
    ],
    migrations: [
      { vm: 'vm1', to: 'dst', atS: 4, mode: opts.mode, prepageForward: 7, hybridRounds: 2, cooperative },
    ],
  });
  const variants: ScenarioVariant[] = [
    { name: 'cooperative faults', scenario: validateScenario(raw(true), 'demo') },
    { name: 'blocking faults', scenario: validateScenario(raw(false), 'demo') },
  ];
  console.log(
    `Moving vm1 (${opts.ram} MiB, ${opts.vcpus} vCPU${opts.vcpus > 1 ? 's' : ''}, ${opts.workload} under load) from src to dst ` +
      `by ${opts.mode} over 1 Gbit/s, in the simulator (virtual time).\n`,
  );
  const shown = simulate(variants[0].scenario, {
    seed: 1,
    variant: variants[0].name,
    progress: {
      everyMs: 2000,
      report(now, [m]) {
        if (!m) return;
        // precopy: how much of what was handed out has left; postcopy: pages on the destination
        const postcopy = m.phase === 'postcopy' || m.phase === 'completed';
        const done = postcopy ? m.pagesOnDestination / m.pages : m.bytesOnWire / Math.max(1, m.bytesQueued);
        console.log(
          `  t=${(now / 1000).toFixed(0).padStart(3)} s  ${m.phase.padEnd(16)} ${bar(done)} ` +
            `${(done * 100).toFixed(0).padStart(3)}% ${postcopy ? 'on dst' : 'sent  '}  ` +
            `${formatBytes(m.bytesOnWire).padStart(9)} on the wire  remote faults ${m.remoteFaults}`,
        );
      },
    },
  });
  const compared = simulate(variants[1].scenario, { seed: 1, variant: variants[1].name });
  const report = mergeReports('demo', 1, [shown, compared]);
  console.log(`\n${compareVariants(report)}`);
  console.log(
    '(1 s / 5 s / 10 s: the workload’s throughput right after the switchover, relative to before the migration)',
  );
  const m = shown.migrations[0];
  if (m.remoteFaults > 0)
    console.log(
      `\nWith cooperative faults ${m.asyncFaults} of ${m.asyncFaults + m.syncFaults} remote faults parked only the faulting ` +
        `task; the vCPUs spent ${(m.vcpuBlockedMs / 1000).toFixed(2)} s blocked, against ` +
        `${(compared.migrations[0].vcpuBlockedMs / 1000).toFixed(2)} s with blocking faults.`,
    );
  if (opts.json) {
    writeJson(opts.json, report);
    console.log(`report written to ${opts.json}`);
  }
  mkdirSync(dirname(opts.html), { recursive: true });
  const { renderHtml } = await import('../report/html.ts');
  writeText(opts.html, await renderHtml(report));
  console.log(`HTML report: ${opts.html}`);
}
