// Whole simulated migrations checked against closed forms: transfer time without
// dirtying, the geometric shrinking of precopy rounds, what the stop policies do when
// the guest dirties faster than the link, and postcopy's accounting.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { MigrationReport } from '../../src/report/schema.ts';
import { type ScenarioInput, validateScenario } from '../../src/sim/scenario.ts';
import { simulate } from '../../src/sim/world.ts';

const PAGE = 4096;
/** Bytes a page occupies on the wire: contents and an 8-byte record header. */
const PAGE_WIRE = PAGE + 8;
const MiB = 1024 * 1024;
/** Device state sent at the switchover (the engine's default). */
const DEVICE_STATE = 256 * 1024;

/** Goodput in bytes per ms. */
function goodput(mbps: number, efficiency: number): number {
  return (mbps * 1e6 * efficiency) / 8 / 1000;
}

type VmInput = ScenarioInput['vms'] extends (infer V)[] | undefined ? V : never;
type MigrationInput = ScenarioInput['migrations'] extends (infer M)[] | undefined ? M : never;

interface Setup {
  mbps?: number;
  efficiency?: number;
  latencyUs?: number;
  vm?: Partial<VmInput>;
  migration?: Partial<MigrationInput>;
  /** Extra migrations after the first (e.g. to see where the VM ended up). */
  later?: MigrationInput[];
  durationS?: number;
}

/** One VM `v` on host `a` migrating to `b`; host `c` is spare. */
function scenario(o: Setup) {
  const mbps = o.mbps ?? 1000;
  return validateScenario({
    durationS: o.durationS ?? 3600,
    network: { efficiency: o.efficiency ?? 0.94 },
    hosts: ['a', 'b', 'c'].map((name) => ({ name, nicMbps: mbps, latencyUs: o.latencyUs ?? 0 })),
    vms: [{ name: 'v', host: 'a', ramMiB: 256, ...o.vm }],
    migrations: [{ vm: 'v', to: 'b', ...o.migration }, ...(o.later ?? [])],
  });
}

function run(o: Setup, seed = 1): MigrationReport[] {
  return simulate(scenario(o), { seed }).migrations;
}

function within(actual: number, expected: number, rel: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= rel * Math.abs(expected),
    `${what}: ${actual}, expected ${expected} ± ${(rel * 100).toFixed(2)}%`,
  );
}

function pagesTotal(m: MigrationReport): number {
  const p = m.pagesSent;
  return p.bulk + p.urgent + p.prepaged + p.resent + p.zero;
}

// ---------------------------------------------------------------------------------------
// No dirtying: one pass over RAM at the path's goodput

test('no dirtying: precopy takes bytes ÷ (efficiency × bandwidth), one round, no downtime beyond the device state', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(16, 100, 256, 1024, 3000),
      fc.constantFrom(100, 1000, 2500, 10_000),
      fc.constantFrom(0.5, 0.94, 1),
      fc.constantFrom(1, 0.5, 0.1),
      (ramMiB, mbps, efficiency, usedShare) => {
        const usedMiB = Math.max(1, Math.round(ramMiB * usedShare));
        const [m] = run({ mbps, efficiency, vm: { ramMiB, usedMiB } });
        assert.equal(m.outcome, 'completed', m.reason);
        const pages = ramMiB * 256;
        const zero = pages - usedMiB * 256;
        // every page once: used pages with contents, the rest as bare records
        assert.deepEqual(m.pagesSent, { bulk: pages - zero, urgent: 0, prepaged: 0, resent: 0, zero });
        assert.deepEqual(m.roundPages, [pages]);
        assert.equal(m.rounds, 1);
        const contentBytes = (pages - zero) * PAGE + pages * 8;
        assert.ok(m.bytesSent >= contentBytes, `bytesSent ${m.bytesSent} < page bytes ${contentBytes}`);
        assert.ok(
          m.bytesSent < contentBytes + MiB,
          `bytesSent ${m.bytesSent}: more than pages + device state`,
        );
        within(m.totalTimeMs, m.bytesSent / goodput(mbps, efficiency), 0.01, 'total time');
        // independently of the report's byte count: pages plus the 256 KiB device state
        within(
          m.totalTimeMs,
          (contentBytes + DEVICE_STATE) / goodput(mbps, efficiency),
          0.001,
          'from page bytes',
        );
        // nothing left at the stop: downtime is the device state's transfer
        assert.ok(m.downtimeMs < (2 * MiB) / goodput(mbps, efficiency), `downtime ${m.downtimeMs} ms`);
        assert.equal(m.remoteFaults, 0);
        assert.equal(m.postcopyMs, 0);
      },
    ),
    { numRuns: 40 },
  );
});

test('no dirtying: setup time, latency, a bandwidth cap and a slower switch link add up as expected', () => {
  const setupMs = 750;
  const latencyUs = 400; // per host: one way is 0.8 ms
  const [m] = run({ mbps: 1000, latencyUs, migration: { setupMs, maxBandwidthMbps: 300 } });
  assert.equal(m.outcome, 'completed');
  const expected = setupMs + m.bytesSent / goodput(300, 0.94) + (2 * latencyUs) / 1000;
  within(m.totalTimeMs, expected, 0.001, 'total time with setup, cap and latency');

  // two switches joined by a 200 Mbit/s link: the link is the bottleneck
  const s = validateScenario({
    network: { efficiency: 0.94 },
    switches: [{ name: 's1' }, { name: 's2', latencyUs: 100 }],
    links: [{ from: 's1', to: 's2', bandwidthMbps: 200, latencyUs: 300 }],
    hosts: [
      { name: 'a', nicMbps: 1000, latencyUs: 0, switch: 's1' },
      { name: 'b', nicMbps: 1000, latencyUs: 0, switch: 's2' },
    ],
    vms: [{ name: 'v', host: 'a', ramMiB: 128 }],
    migrations: [{ vm: 'v', to: 'b' }],
  });
  const [n] = simulate(s, { seed: 1 }).migrations;
  assert.equal(n.outcome, 'completed');
  within(n.totalTimeMs, n.bytesSent / goodput(200, 0.94) + 0.4, 0.001, 'total time over the switch link');
});

// ---------------------------------------------------------------------------------------
// Cold dirtying below the bandwidth: rounds shrink geometrically

test('cold dirty rate D < bandwidth B: round sizes follow a geometric series of ratio D ÷ B', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(500, 1000, 2000),
      fc.double({ min: 0.15, max: 0.5, noNaN: true }),
      (mbps, ratio) => {
        const B = goodput(mbps, 0.94) * 1000; // bytes/s
        const D = ratio * B; // bytes/s of dirtied pages
        const [m] = run({
          mbps,
          vm: { ramMiB: 4096, dirty: { rateMBps: D / 1e6 } },
          migration: { downtimeLimitMs: 1, maxRounds: 12, onNoConvergence: 'force' },
        });
        assert.equal(m.outcome, 'completed', m.reason);
        const rp = m.roundPages;
        assert.equal(rp[0], 4096 * 256, 'the first round sends all of RAM');
        // a round of n pages takes n × PAGE_WIRE ÷ B, during which D ÷ PAGE pages per second are dirtied
        const expected = (D / PAGE) * (PAGE_WIRE / B);
        let checked = 0;
        for (let i = 1; i < rp.length && rp[i] >= 2000; i++) {
          within(rp[i] / rp[i - 1], expected, 0.03, `round ${i + 1} ÷ round ${i} (rounds ${rp.join(', ')})`);
          checked++;
        }
        assert.ok(checked >= 2, `only ${checked} large rounds to compare: ${rp.join(', ')}`);
        // resent pages are exactly the later rounds
        const later = rp.slice(1).reduce((a, b) => a + b, 0);
        assert.ok(m.pagesSent.resent >= later, `resent ${m.pagesSent.resent} < later rounds ${later}`);
      },
    ),
    { numRuns: 12 },
  );
});

// ---------------------------------------------------------------------------------------
// Dirty rate above the bandwidth: the policy decides, nothing hangs

const HOT = { dirty: { rateMBps: 400 } }; // 400 MB/s over a 117.5 MB/s link

test('dirty rate above bandwidth, abort after maxRounds: aborted, the VM stays on the source', () => {
  const [m, next] = run({
    vm: HOT,
    migration: { maxRounds: 3, onNoConvergence: 'abort' },
    // a later migration shows where the VM runs
    later: [{ vm: 'v', to: 'c', atS: 120, maxRounds: 1, onNoConvergence: 'force' }],
  });
  assert.equal(m.outcome, 'aborted');
  assert.match(m.reason, /did not converge/);
  assert.match(m.reason, /max 3 rounds/);
  assert.equal(m.downtimeMs, 0, 'the guest never stopped');
  assert.ok(m.rounds >= 3 && m.rounds <= 4, `rounds ${m.rounds}`);
  assert.equal(m.roundPages.length, m.rounds);
  assert.equal(next.source, 'a', 'the VM still runs on its source host');
  assert.equal(next.outcome, 'completed');
});

test('maxRounds: n rounds are sent before precopy gives up', () => {
  for (const n of [1, 2, 5]) {
    const [m] = run({ vm: HOT, migration: { maxRounds: n, onNoConvergence: 'abort' } });
    assert.equal(m.outcome, 'aborted');
    assert.equal(m.roundPages.length, n, `maxRounds ${n}: rounds ${m.roundPages.join(', ')}`);
  }
});

test('dirty rate above bandwidth, force: completed with the whole working set in the downtime', () => {
  const [m, next] = run({
    vm: HOT,
    migration: { maxRounds: 3, onNoConvergence: 'force' },
    later: [{ vm: 'v', to: 'c', atS: 120, maxRounds: 1, onNoConvergence: 'force' }],
  });
  assert.equal(m.outcome, 'completed', m.reason);
  // everything is dirty again by the stop: the guest is down for a full pass over RAM
  const fullPassMs = (256 * 256 * PAGE_WIRE) / goodput(1000, 0.94);
  assert.ok(m.downtimeMs > 0.9 * fullPassMs, `downtime ${m.downtimeMs} ms < 90% of ${fullPassMs} ms`);
  assert.ok(m.downtimeMs < 1.1 * fullPassMs, `downtime ${m.downtimeMs} ms`);
  assert.equal(next.source, 'b', 'the VM runs on the destination');
});

test('dirty rate above bandwidth, switch to postcopy: completed, short downtime, postcopy phase', () => {
  const [m] = run({
    vm: { ...HOT, access: { touchesPerSec: 2000 } },
    migration: { maxRounds: 3, onNoConvergence: 'postcopy' },
  });
  assert.equal(m.outcome, 'completed', m.reason);
  assert.ok(m.postcopyMs > 0, `postcopyMs ${m.postcopyMs}`);
  assert.ok(m.downtimeMs < 50, `downtime ${m.downtimeMs} ms`);
  assert.ok(m.remoteFaults > 0, 'the guest touched missing pages');
  // every page is on the destination: the last pass covers what precopy left dirty
  assert.ok(pagesTotal(m) >= 256 * 256);
});

test('dirty rate above bandwidth, maxBytesFactor: gives up at the first check past factor × RAM', () => {
  const ram = 256 * MiB;
  for (const factor of [1.5, 3]) {
    const [m] = run({ vm: HOT, migration: { maxBytesFactor: factor, onNoConvergence: 'abort' } });
    assert.equal(m.outcome, 'aborted');
    assert.match(m.reason, /× RAM/);
    assert.ok(m.bytesSent >= factor * ram, `sent ${m.bytesSent} < ${factor} × RAM`);
    // the rule is checked once a round: at most one more round (≤ RAM) past the budget
    assert.ok(m.bytesSent <= (factor + 1.05) * ram, `sent ${m.bytesSent / ram} × RAM`);
  }
});

test('dirty rate above bandwidth, deadline: gives up at the first check past the deadline', () => {
  const roundMs = (256 * 256 * PAGE_WIRE) / goodput(1000, 0.94);
  for (const deadlineS of [3, 10]) {
    const [m] = run({ vm: HOT, migration: { deadlineS, onNoConvergence: 'abort', setupMs: 500 } });
    assert.equal(m.outcome, 'aborted');
    assert.match(m.reason, /deadline/);
    // measured from the start of the transfer (after setup)
    assert.ok(m.totalTimeMs >= 500 + deadlineS * 1000, `total ${m.totalTimeMs} ms`);
    assert.ok(m.totalTimeMs <= 500 + deadlineS * 1000 + roundMs * 1.05, `total ${m.totalTimeMs} ms`);
  }
});

test('dirty rate above bandwidth with no budget: the simulation ends the migration as failed', () => {
  const [m] = run({ vm: HOT, durationS: 20 });
  assert.equal(m.outcome, 'failed');
  assert.match(m.reason, /simulation ended/);
  assert.ok(m.rounds > 3);
});

test('a migration cut off by the end of the simulation reports the time it had', () => {
  // one batch of pages that would land at ≈ 2.3 s; the simulation stops at 1 s
  const [m] = run({ durationS: 1 });
  assert.equal(m.outcome, 'failed');
  assert.equal(m.totalTimeMs, 1000);
});

test('a migration scheduled after the end of the simulation is reported as never started', () => {
  const s = scenario({ durationS: 5, migration: { atS: 10 } });
  assert.deepEqual(
    simulate(s, { seed: 1 }).migrations.map((m) => m?.outcome),
    ['failed'],
  );
  const t = validateScenario({
    durationS: 5,
    hosts: [
      { name: 'a', nicMbps: 1000 },
      { name: 'b', nicMbps: 1000 },
    ],
    vms: [
      { name: 'late', host: 'a', ramMiB: 16 },
      { name: 'early', host: 'a', ramMiB: 16 },
    ],
    migrations: [
      { vm: 'late', to: 'b', atS: 10 },
      { vm: 'early', to: 'b' },
    ],
  });
  const r = simulate(t, { seed: 1 });
  assert.deepEqual(
    r.migrations.map((m) => [m?.vm, m?.outcome, m?.reason]),
    [
      ['late', 'failed', 'the simulation ended before it started'],
      ['early', 'completed', 'precopy completed'],
    ],
  );
});

// ---------------------------------------------------------------------------------------
// Postcopy

test('postcopy: every page arrives once, faults are counted and their latencies ordered', () => {
  for (const [seed, prepageForward, urgentLane] of [
    [1, 0, true],
    [2, 7, true],
    [3, 0, false],
  ] as const) {
    const [m] = run(
      {
        latencyUs: 50,
        vm: {
          ramMiB: 256,
          usedMiB: 200,
          dirty: { hotSetMiB: 32, rateMBps: 50 },
          access: { touchesPerSec: 5000, hotFraction: 0.8 },
        },
        migration: { mode: 'postcopy', prepageForward, urgentLane },
      },
      seed,
    );
    const what = `seed ${seed}, prepage ${prepageForward}, urgent lane ${urgentLane}`;
    assert.equal(m.outcome, 'completed', `${what}: ${m.reason}`);
    const p = m.pagesSent;
    // postcopy sends each page once (a demanded page is taken out of the push), except that
    // a page demanded while its copy is queued on the bulk lane goes again on the urgent lane
    if (!urgentLane) assert.equal(m.demandResends, 0, what);
    assert.ok(m.demandResends <= m.remoteFaults, what);
    assert.ok(pagesTotal(m) >= 256 * 256 && pagesTotal(m) <= 256 * 256 + m.demandResends, what);
    assert.equal(p.resent, 0, what);
    assert.equal(p.zero, 56 * 256, what);
    assert.equal(m.rounds, 0, what);
    assert.ok(m.remoteFaults > 0, `${what}: no remote faults`);
    assert.ok(p.urgent > 0, `${what}: no urgent pages`);
    assert.ok(p.urgent <= m.remoteFaults, `${what}: ${p.urgent} urgent pages > ${m.remoteFaults} faults`);
    if (prepageForward > 0) assert.ok(p.prepaged > 0, `${what}: nothing prepaged`);
    else assert.equal(p.prepaged, 0, what);
    const l = m.faultLatencyUs;
    assert.ok(l.p50 > 0, `${what}: p50 ${l.p50}`);
    assert.ok(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max, `${what}: ${JSON.stringify(l)}`);
    // a fault costs at least a round trip (2 × 0.1 ms) and a page's transfer
    assert.ok(l.p50 >= 200, `${what}: p50 ${l.p50} µs below the round trip`);
    assert.ok(m.postcopyMs > 0 && m.postcopyMs <= m.totalTimeMs);
    assert.ok(m.downtimeMs < 10, `${what}: downtime ${m.downtimeMs} ms`);
    // the push is one pass over RAM: postcopy takes about as long as precopy of a quiet guest
    within(m.totalTimeMs, m.bytesSent / goodput(1000, 0.94), 0.02, `${what}: total time`);
  }
});

test('postcopy: the urgent lane makes faults cheaper than waiting behind the push', () => {
  const vm = { ramMiB: 256, dirty: { hotSetMiB: 32 }, access: { touchesPerSec: 5000 } };
  const [fast] = run({ latencyUs: 50, vm, migration: { mode: 'postcopy', urgentLane: true } });
  const [slow] = run({ latencyUs: 50, vm, migration: { mode: 'postcopy', urgentLane: false } });
  assert.equal(fast.outcome, 'completed');
  assert.equal(slow.outcome, 'completed');
  assert.ok(
    fast.faultLatencyUs.p50 * 10 < slow.faultLatencyUs.p50,
    `p50 with urgent lane ${fast.faultLatencyUs.p50} µs, without ${slow.faultLatencyUs.p50} µs`,
  );
  // more pages arrive between faults without the lane, so the guest takes fewer faults
  assert.ok(fast.remoteFaults > slow.remoteFaults);
});
