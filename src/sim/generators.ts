// Scenarios built in code for benchmarks and studies too large to write by hand.

import {
  type MigrationSpec,
  type Scenario,
  ScenarioSchema,
  type VmSpec,
  validateScenario,
} from './scenario.ts';

/**
 * N hosts in a ring, each with one VM migrating by precopy to the next host at the same
 * moment: SimGrid's classic scaling setup. Built from the schema's defaults without
 * validating every entry, so building never dominates the run.
 */
export function ringScenario(n: number, opts: { ramMiB?: number; dirtyMBps?: number } = {}): Scenario {
  const ramMiB = opts.ramMiB ?? 2048;
  const base = ScenarioSchema.parse({ name: `ring-${n}`, hosts: [{ name: 'h0', nicMbps: 1000 }] });
  const vmTemplate: VmSpec = validateScenario({
    hosts: [{ name: 'h', nicMbps: 1 }],
    vms: [
      {
        name: 'v',
        host: 'h',
        ramMiB,
        usedMiB: ramMiB,
        dirty: { rateMBps: opts.dirtyMBps ?? 37.5, workingSetMiB: ramMiB * 0.9 },
      },
    ],
  }).vms[0];
  const migrationTemplate: MigrationSpec = validateScenario({
    hosts: [{ name: 'h', nicMbps: 1 }],
    vms: [{ name: 'v', host: 'h', ramMiB }],
    migrations: [{ vm: 'v', to: 'h', mode: 'precopy' }],
  }).migrations[0];
  const host = base.hosts[0];
  return {
    ...base,
    hosts: Array.from({ length: n }, (_, i) => ({ ...host, name: `h${i}`, latencyUs: 25 })),
    vms: Array.from({ length: n }, (_, i) => ({ ...vmTemplate, name: `vm${i}`, host: `h${i}` })),
    migrations: Array.from({ length: n }, (_, i) => ({
      ...migrationTemplate,
      vm: `vm${i}`,
      to: `h${(i + 1) % n}`,
    })),
  };
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
