// Host contention: while a migration moves pages, the guest's work takes (1 + x) times as
// long; before and after, it runs at full speed.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rate } from '../../src/report/throughput.ts';
import { validateScenario } from '../../src/sim/scenario.ts';
import { simulate } from '../../src/sim/world.ts';

function run(hostContention: number, hostBusy = 0, connections?: number, pathContention?: number) {
  const scenario = validateScenario({
    name: 'contention',
    durationS: 60,
    settleS: 2,
    hosts: [
      { name: 'a', nicMbps: 100 },
      { name: 'b', nicMbps: 100 },
    ],
    vms: [
      {
        name: 'kv',
        host: 'a',
        ramMiB: 64,
        usedMiB: 48,
        vcpus: 1,
        hostContention,
        hostBusy,
        ...(pathContention === undefined ? {} : { pathContention }),
        workload: { kind: 'kv', keys: 20000, cpuMs: 0.4, ...(connections ? { connections, pathMs: 4 } : {}) },
        dirty: { rateMBps: 0 },
      },
    ],
    migrations: [{ vm: 'kv', to: 'b', atS: 3, mode: 'precopy' }],
  });
  const r = simulate(scenario, { seed: 1 });
  const m = r.migrations[0];
  const w = r.workloads[0];
  const ops = w.throughput.map(([, perSec]) => perSec / 10);
  return {
    before: rate(ops, 1000, m.startMs),
    during: rate(ops, m.startMs + 200, m.startMs + m.totalTimeMs - m.downtimeMs - 200),
    after: rate(ops, m.startMs + m.totalTimeMs + 200, m.startMs + m.totalTimeMs + 1500),
  };
}

test('host contention slows the guest only while its migration moves pages', () => {
  const free = run(0);
  const busy = run(1);
  assert.ok(Math.abs(busy.before / free.before - 1) < 0.05, `before: ${busy.before} vs ${free.before}`);
  const slowdown = busy.during / free.during;
  assert.ok(slowdown > 0.4 && slowdown < 0.6, `during the migration: ${busy.during} vs ${free.during}`);
  assert.ok(Math.abs(busy.after / free.after - 1) < 0.1, `after: ${busy.after} vs ${free.after}`);
});

test('a busy host thread slows only the clients’ way through the host, and only while pages move', () => {
  // clients whose cycle is mostly their path (4 ms) beside a 0.4 ms request
  const free = run(0, 0, 2);
  const busy = run(0, 0.5, 2);
  assert.ok(Math.abs(busy.before / free.before - 1) < 0.05, `before: ${busy.before} vs ${free.before}`);
  // the path takes twice as long: a 4.4 ms cycle becomes about 8.4 ms
  const slowdown = busy.during / free.during;
  assert.ok(slowdown > 0.45 && slowdown < 0.62, `during the migration: ${busy.during} vs ${free.during}`);
  assert.ok(Math.abs(busy.after / free.after - 1) < 0.1, `after: ${busy.after} vs ${free.after}`);
});

test('a path contention of its own stands for the contention and the busy share on the clients’ way', () => {
  // the path twice as long either way: a thread busy half the time, or contention 1 on the path alone
  assert.deepEqual(run(0, 0, 2, 1), run(0, 0.5, 2));
  // the guest's contention slows the guest and, by default, the path; with a path
  // contention of its own, the guest only
  assert.deepEqual(run(1, 0, 2, 1), run(1, 0, 2));
  assert.notDeepEqual(run(1, 0, 2, 0), run(1, 0, 2));
});
