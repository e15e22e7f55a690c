import { formatBytes, summarize } from '../report/summary.ts';
import { validateScenario } from '../sim/scenario.ts';
import { simulate } from '../sim/world.ts';
import { UsageError } from './errors.ts';
import { writeJson } from './io.ts';

const BAR = 30;

function bar(fraction: number): string {
  const n = Math.round(Math.max(0, Math.min(1, fraction)) * BAR);
  return `[${'#'.repeat(n)}${'.'.repeat(BAR - n)}]`;
}

/** A VM under load moves between two hosts on a 1 Gbit/s link, in the simulator. */
export function demoCommand(opts: { mode: string; ram: number; json?: string }): void {
  if (!['precopy', 'postcopy', 'hybrid'].includes(opts.mode))
    throw new UsageError(`--mode: '${opts.mode}' is not one of precopy, postcopy, hybrid`);
  if (!(Number.isInteger(opts.ram) && opts.ram >= 16))
    throw new UsageError(`--ram: '${opts.ram}' must be a whole number of MiB ≥ 16`);
  const scenario = validateScenario(
    {
      name: 'demo',
      hosts: [
        { name: 'src', nicMbps: 1000 },
        { name: 'dst', nicMbps: 1000 },
      ],
      vms: [
        {
          name: 'web1',
          host: 'src',
          ramMiB: opts.ram,
          usedMiB: Math.round(opts.ram * 0.75),
          dirty: { hotSetMiB: Math.round(opts.ram / 64), hotPeriodS: 2, rateMBps: 10 },
          access: { touchesPerSec: 2000, hotFraction: 0.8 },
        },
      ],
      migrations: [{ vm: 'web1', to: 'dst', mode: opts.mode, prepageForward: 7, hybridRounds: 2 }],
    },
    'demo',
  );
  console.log(
    `Moving web1 (${opts.ram} MiB, under load) from src to dst by ${opts.mode}, over 1 Gbit/s, in the simulator.\n`,
  );
  const report = simulate(scenario, {
    seed: 1,
    progress: {
      everyMs: 2000,
      report(now, [m]) {
        if (!m) return;
        // precopy: how much of what was handed out has left; postcopy: pages on the destination
        const postcopy = m.phase === 'postcopy' || m.phase === 'completed';
        const done = postcopy ? m.pagesOnDestination / m.pages : m.bytesOnWire / Math.max(1, m.bytesQueued);
        console.log(
          `  t=${(now / 1000).toFixed(0).padStart(3)} s  ${m.phase.padEnd(16)} ${bar(done)} ` +
            `${postcopy ? `${(done * 100).toFixed(0).padStart(3)}% on dst` : `${(done * 100).toFixed(0).padStart(3)}% sent  `}  ` +
            `${formatBytes(m.bytesOnWire).padStart(9)} on the wire  remote faults ${m.remoteFaults}`,
        );
      },
    },
  });
  console.log(`\n${summarize(report)}`);
  const m = report.migrations[0];
  const p = m.pagesSent;
  console.log(
    `\npages sent: bulk ${p.bulk}, urgent ${p.urgent}, prepaged ${p.prepaged}, resent ${p.resent}, zero ${p.zero}; ` +
      `remote faults ${m.remoteFaults} (latency p50 ${(m.faultLatencyUs.p50 / 1000).toFixed(2)} ms, p99 ${(m.faultLatencyUs.p99 / 1000).toFixed(2)} ms)`,
  );
  if (opts.json) {
    writeJson(opts.json, report);
    console.log(`report written to ${opts.json}`);
  }
}
