import { summarize } from '../report/summary.ts';
import { validateScenario } from '../sim/scenario.ts';
import { simulate } from '../sim/world.ts';
import { UsageError } from './errors.ts';
import { writeJson } from './io.ts';

/** A VM under load moves between two hosts on a 1 Gbit/s link, in the simulator. */
export function demoCommand(opts: { mode: string; ram: number; json?: string }): void {
  if (!['precopy', 'postcopy', 'hybrid'].includes(opts.mode))
    throw new UsageError(`--mode: '${opts.mode}' is not one of precopy, postcopy, hybrid`);
  if (!(opts.ram >= 16)) throw new UsageError(`--ram: '${opts.ram}' must be a number of MiB ≥ 16`);
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
          dirty: { hotSetMiB: Math.round(opts.ram / 16), hotPeriodS: 1, rateMBps: 20 },
          access: { touchesPerSec: 2000, hotFraction: 0.8 },
        },
      ],
      migrations: [{ vm: 'web1', to: 'dst', mode: opts.mode, prepageForward: 7, hybridRounds: 2 }],
    },
    'demo',
  );
  console.log(
    `Simulating a ${opts.mode} migration of a ${opts.ram} MiB VM under load (1 Gbit/s link, virtual time)…\n`,
  );
  const report = simulate(scenario, { seed: 1 });
  console.log(summarize(report));
  const m = report.migrations[0];
  const total =
    m.pagesSent.bulk + m.pagesSent.urgent + m.pagesSent.prepaged + m.pagesSent.resent + m.pagesSent.zero;
  console.log(
    `\npages sent: ${total} (bulk ${m.pagesSent.bulk}, urgent ${m.pagesSent.urgent}, prepaged ${m.pagesSent.prepaged}, ` +
      `resent ${m.pagesSent.resent}, zero ${m.pagesSent.zero}); remote faults ${m.remoteFaults}`,
  );
  if (opts.json) {
    writeJson(opts.json, report);
    console.log(`report written to ${opts.json}`);
  }
}
