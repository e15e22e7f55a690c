// Same scenario and seed ⇒ the same report, byte for byte; the seed reaches the random
// parts of the model (bursty hot sets, the postcopy guest's touches) and nothing else.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Report } from '../../src/report/schema.ts';
import { parseScenario, type Scenario, validateScenario } from '../../src/sim/scenario.ts';
import { simulate } from '../../src/sim/world.ts';

/** Four hosts on two switches; bursty precopy, postcopy and hybrid migrations that share links. */
function busyScenario(): Scenario {
  return validateScenario({
    name: 'busy',
    network: { duplexInterference: 0.05 },
    switches: [{ name: 'left' }, { name: 'right', latencyUs: 20 }],
    links: [{ from: 'left', to: 'right', bandwidthMbps: 2000, latencyUs: 100 }],
    hosts: [
      { name: 'h0', nicMbps: 1000, switch: 'left' },
      { name: 'h1', nicMbps: 1000, switch: 'left' },
      { name: 'h2', nicMbps: 1000, switch: 'right' },
      { name: 'h3', nicMbps: 1000, switch: 'right' },
    ],
    vms: [
      {
        name: 'bursty',
        host: 'h0',
        ramMiB: 512,
        dirty: { hotSetMiB: 48, hotPattern: 'burst', hotPeriodS: 0.7, rateMBps: 10 },
      },
      {
        name: 'pc',
        host: 'h1',
        ramMiB: 384,
        usedMiB: 300,
        dirty: { hotSetMiB: 32, rateMBps: 30 },
        access: { touchesPerSec: 4000, hotFraction: 0.7 },
      },
      {
        name: 'hy',
        host: 'h2',
        ramMiB: 256,
        dirty: { hotSetMiB: 16, hotPattern: 'once', hotPeriodS: 3, rateMBps: 60 },
        access: { touchesPerSec: 3000 },
      },
    ],
    migrations: [
      { vm: 'bursty', to: 'h2', downtimeLimitMs: 100, maxRounds: 10, onNoConvergence: 'force' },
      { vm: 'pc', to: 'h3', mode: 'postcopy', prepageForward: 3, atS: 0.25 },
      { vm: 'hy', to: 'h0', mode: 'hybrid', hybridRounds: 2, atS: 0.5 },
      { vm: 'bursty', to: 'h1', atS: 30, downtimeLimitMs: 200, maxRounds: 5, onNoConvergence: 'postcopy' },
    ],
  });
}

const json = (r: Report) => JSON.stringify(r, null, 2);

test('same scenario and seed ⇒ byte-identical JSON reports', () => {
  for (const seed of [1, 42, 0xffffffff]) {
    const a = json(simulate(busyScenario(), { seed }));
    const b = json(simulate(busyScenario(), { seed }));
    assert.equal(a, b, `seed ${seed}`);
    const report = JSON.parse(a) as Report;
    assert.equal(report.seed, seed);
    assert.equal(report.migrations.length, 4);
    for (const m of report.migrations) assert.equal(m.outcome, 'completed', `${m.vm}: ${m.reason}`);
  }
});

test('the same scenario object run twice, and the same YAML parsed twice, give identical reports', () => {
  const s = busyScenario();
  assert.equal(json(simulate(s, { seed: 9 })), json(simulate(s, { seed: 9 })), 'the scenario is not mutated');
  const yaml = `
name: yaml
hosts:
  - { name: a, nicMbps: 1000 }
  - { name: b, nicMbps: 1000 }
vms:
  - name: v
    host: a
    ramMiB: 128
    dirty: { hotSetMiB: 16, hotPattern: burst, hotPeriodS: 0.3, rateMBps: 5 }
    access: { touchesPerSec: 3000 }
migrations:
  - { vm: v, to: b, mode: hybrid, hybridRounds: 2 }
`;
  const a = json(simulate(parseScenario(yaml), { seed: 5 }));
  const b = json(simulate(parseScenario(yaml), { seed: 5 }));
  assert.equal(a, b);
});

test('a different seed changes a scenario with random elements', () => {
  const strip = (r: Report) => JSON.stringify(r.migrations);
  const base = strip(simulate(busyScenario(), { seed: 1 }));
  const differing = [2, 3, 4].filter((seed) => strip(simulate(busyScenario(), { seed })) !== base);
  assert.equal(differing.length, 3, 'every other seed gives another run');
});

test('a different seed changes the bursty hot set’s precopy rounds', () => {
  const s = validateScenario({
    hosts: [
      { name: 'a', nicMbps: 1000 },
      { name: 'b', nicMbps: 1000 },
    ],
    vms: [
      { name: 'v', host: 'a', ramMiB: 256, dirty: { hotSetMiB: 64, hotPattern: 'burst', hotPeriodS: 0.5 } },
    ],
    migrations: [{ vm: 'v', to: 'b', maxRounds: 20, onNoConvergence: 'force' }],
  });
  const runs = new Set<string>();
  for (let seed = 1; seed <= 6; seed++) {
    const [m] = simulate(s, { seed }).migrations;
    assert.equal(m.outcome, 'completed');
    runs.add(JSON.stringify([m.roundPages, m.totalTimeMs]));
  }
  assert.ok(runs.size >= 2, 'six seeds gave one and the same run');
});

test('a different seed changes the postcopy guest’s faults', () => {
  const s = validateScenario({
    hosts: [
      { name: 'a', nicMbps: 1000 },
      { name: 'b', nicMbps: 1000 },
    ],
    vms: [{ name: 'v', host: 'a', ramMiB: 128, dirty: { hotSetMiB: 16 }, access: { touchesPerSec: 2000 } }],
    migrations: [{ vm: 'v', to: 'b', mode: 'postcopy' }],
  });
  const [a] = simulate(s, { seed: 1 }).migrations;
  const [b] = simulate(s, { seed: 2 }).migrations;
  assert.ok(a.remoteFaults > 0 && b.remoteFaults > 0);
  assert.notDeepEqual(
    [a.remoteFaults, a.faultLatencyUs, a.pagesSent],
    [b.remoteFaults, b.faultLatencyUs, b.pagesSent],
  );
});

test('without random elements the seed changes nothing but the report’s seed field', () => {
  const s = validateScenario({
    hosts: [
      { name: 'a', nicMbps: 1000 },
      { name: 'b', nicMbps: 500 },
    ],
    vms: [{ name: 'v', host: 'a', ramMiB: 256, dirty: { hotSetMiB: 8, hotPattern: 'sweep', rateMBps: 20 } }],
    migrations: [{ vm: 'v', to: 'b', downtimeLimitMs: 50, maxRounds: 8, onNoConvergence: 'force' }],
  });
  const a = simulate(s, { seed: 1 });
  const b = simulate(s, { seed: 123456 });
  assert.deepEqual(a.migrations, b.migrations);
  assert.notEqual(a.seed, b.seed);
});
