// Scenarios built in code for benchmarks and studies too large to write by hand.

import { type Scenario, validateScenario } from './scenario.ts';

/**
 * N hosts in a ring, each with one VM migrating by precopy to the next host at the same
 * moment: SimGrid's classic scaling setup.
 */
export function ringScenario(n: number, opts: { ramMiB?: number; dirtyMBps?: number } = {}): Scenario {
  const ramMiB = opts.ramMiB ?? 2048;
  const hosts = Array.from({ length: n }, (_, i) => ({ name: `h${i}`, nicMbps: 1000, latencyUs: 25 }));
  const vms = hosts.map((h, i) => ({
    name: `vm${i}`,
    host: h.name,
    ramMiB,
    usedMiB: ramMiB,
    dirty: { rateMBps: opts.dirtyMBps ?? 37.5, workingSetMiB: ramMiB * 0.9 },
  }));
  const migrations = vms.map((v, i) => ({ vm: v.name, to: `h${(i + 1) % n}`, mode: 'precopy' as const }));
  return validateScenario({ name: `ring-${n}`, hosts, vms, migrations }, `ring-${n}`);
}

/** One VM of `ramMiB` migrating by postcopy while it touches pages. */
export function postcopyScenario(ramMiB: number, durationS: number): Scenario {
  return validateScenario(
    {
      name: `postcopy-${ramMiB}`,
      durationS,
      hosts: [
        { name: 'a', nicMbps: 1000 },
        { name: 'b', nicMbps: 1000 },
      ],
      vms: [
        {
          name: 'vm',
          host: 'a',
          ramMiB,
          dirty: { hotSetMiB: 256, rateMBps: 20 },
          access: { touchesPerSec: 2000, hotFraction: 0.7 },
        },
      ],
      migrations: [{ vm: 'vm', to: 'b', mode: 'postcopy', prepageForward: 7 }],
    },
    'postcopy',
  );
}
