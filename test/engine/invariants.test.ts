// The engine's invariants (DESIGN.md, "Semantics that must hold") as properties over
// random migrations run through the in-memory harness: random modes, stop rules,
// prepaging, lanes, guest write patterns, fault sequences and interleavings.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { type MigrationMode, migrationConfig, type OnNoConvergence } from '../../src/engine/config.ts';
import type { Outcome } from '../../src/engine/stats.ts';
import { type AccessPattern, type RunReport, runScenario, type Scenario } from './harness.ts';

// ---------------------------------------------------------------------------------------
// Arbitraries

const pageCountArb = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 48 }) },
  { weight: 4, arbitrary: fc.integer({ min: 49, max: 1200 }) },
  // crosses the page-set's 4096-page chunk boundary
  { weight: 1, arbitrary: fc.integer({ min: 4090, max: 4200 }) },
);

function patternArb(n: number): fc.Arbitrary<AccessPattern> {
  const pfn = fc.integer({ min: 0, max: n - 1 });
  return fc.oneof(
    fc.constant<AccessPattern>({ kind: 'random' }),
    fc.record({
      kind: fc.constant('sequential' as const),
      from: pfn,
      length: fc.integer({ min: 1, max: n }),
    }),
    fc.record({
      kind: fc.constant('hot' as const),
      pages: fc.array(pfn, { minLength: 1, maxLength: Math.min(n, 48) }),
      coldPercent: fc.integer({ min: 0, max: 30 }),
    }),
  );
}

const stopArb = fc.record({
  downtimeLimitMs: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 600 })),
  maxRounds: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 8 })),
  maxBytesFactor: fc.constantFrom(0, 0, 1, 1.5, 3),
  /** In mean action steps; scaled by the step size below. */
  deadlineSteps: fc.oneof(fc.constant(0), fc.integer({ min: 20, max: 15_000 })),
  onNoConvergence: fc.constantFrom<OnNoConvergence>('abort', 'force', 'postcopy'),
});

function scenarioArb(modes: MigrationMode[]): fc.Arbitrary<Scenario> {
  return pageCountArb.chain((n) =>
    fc
      .record({
        mode: fc.constantFrom(...modes),
        stop: stopArb,
        postcopy: fc.record({
          prepageForward: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 16 })),
          prepageBackward: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 8 })),
          urgentLane: fc.boolean(),
          jumpToFault: fc.boolean(),
          resendInFlight: fc.boolean(),
        }),
        hybridRounds: fc.integer({ min: 0, max: 4 }),
        deviceStateBytes: fc.integer({ min: 0, max: 300_000 }),
        zeroPercent: fc.constantFrom(0, 5, 30, 100),
        budgetBytes: fc.integer({ min: 1, max: 80_000 }),
        laneDepth: fc.integer({ min: 1, max: 8 }),
        weights: fc.record({
          pull: fc.integer({ min: 1, max: 10 }),
          control: fc.integer({ min: 1, max: 10 }),
          bulk: fc.integer({ min: 1, max: 10 }),
          urgent: fc.integer({ min: 1, max: 10 }),
          back: fc.integer({ min: 1, max: 10 }),
          guest: fc.integer({ min: 1, max: 10 }),
        }),
        // long enough steps let the source measure bandwidth (100 ms windows) and use its downtime rule
        maxStepMs: fc.oneof(
          fc.double({ min: 0.01, max: 5, noNaN: true }),
          fc.double({ min: 5, max: 40, noNaN: true }),
        ),
        idleWhenDrained: fc.boolean(),
        workload: fc.record({
          pattern: patternArb(n),
          touchesPerStep: fc.integer({ min: 0, max: 12 }),
          writePercent: fc.oneof(fc.constant(100), fc.integer({ min: 0, max: 100 })),
          steps: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 3000 })),
          preStartWrites: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 40 })),
          faultSequence: fc.array(fc.nat({ max: n - 1 }), { maxLength: 24 }),
          maxWaiting: fc.oneof(fc.constant(1), fc.integer({ min: 2, max: 64 })),
        }),
        seed: fc.integer(),
      })
      .map(
        ({
          mode,
          stop: { deadlineSteps, ...rules },
          postcopy,
          hybridRounds,
          deviceStateBytes,
          workload,
          ...rest
        }): Scenario => {
          const deadlineMs =
            deadlineSteps === 0 ? 0 : Math.max(1, Math.round((deadlineSteps * rest.maxStepMs) / 2));
          const stop = { ...rules, deadlineMs };
          const budgeted = stop.maxRounds > 0 || stop.maxBytesFactor > 0 || stop.deadlineMs > 0;
          // Precopy without any budget rule only ends once the guest's writes do.
          if (!budgeted && workload.steps === 0) workload = { ...workload, steps: 1500 };
          return {
            ...rest,
            pageCount: n,
            config: migrationConfig({
              mode,
              stop,
              postcopy,
              hybrid: { rounds: hybridRounds },
              deviceStateBytes,
            }),
            workload,
            maxSteps: 60 * (n + 200) + 40 * (workload.steps || 3000) + 4 * deadlineSteps + 20_000,
          };
        },
      ),
  );
}

const ALL: MigrationMode[] = ['precopy', 'postcopy', 'hybrid'];
const runs = (numRuns: number) => ({ numRuns });

// ---------------------------------------------------------------------------------------
// Checks

function summary(r: RunReport): string {
  const c = r.scenario.config;
  return (
    `mode=${c.mode} pages=${r.scenario.pageCount} outcome=${r.outcome} (source ${r.sourceOutcome}, ` +
    `destination ${r.destOutcome}) hung=${r.hung} steps=${r.steps} t=${r.now.toFixed(1)} ` +
    `rounds=${r.source.stats.rounds} reasons=[${r.reasons.join('; ')}]`
  );
}

/** First pages where the destination's copy differs from the guest's final RAM. */
function ramDifferences(dest: Int32Array, guest: Int32Array): string[] {
  const out: string[] = [];
  for (let p = 0; p < guest.length && out.length < 8; p++)
    if (dest[p] !== guest[p]) out.push(`pfn ${p}: destination v${dest[p]}, guest v${guest[p]}`);
  return out;
}

function assertRamMatches(r: RunReport): void {
  assert.deepEqual(ramDifferences(r.destRam, r.guestRam), [], `RAM differs at the end: ${summary(r)}`);
  assert.ok(r.destRamAtCompletion && r.guestRamAtCompletion, `no completion snapshot: ${summary(r)}`);
  assert.deepEqual(
    ramDifferences(r.destRamAtCompletion, r.guestRamAtCompletion),
    [],
    `RAM differs when the destination reported completion: ${summary(r)}`,
  );
  assert.equal(r.waitingTouches, 0, `guest touches still waiting for pages: ${summary(r)}`);
  assert.equal(r.dest.present.size, r.scenario.pageCount, `destination lacks pages: ${summary(r)}`);
}

function expectedOutcomes(s: Scenario): Outcome[] {
  const c = s.config;
  return c.mode !== 'postcopy' && c.stop.onNoConvergence === 'abort'
    ? ['completed', 'aborted']
    : ['completed'];
}

// ---------------------------------------------------------------------------------------
// Properties

test('1. completed ⇒ the destination RAM equals the guest final RAM, page for page', () => {
  fc.assert(
    fc.property(scenarioArb(ALL), (s) => {
      const r = runScenario(s);
      if (r.outcome === 'completed') assertRamMatches(r);
    }),
    runs(400),
  );
});

test('2. nothing stale survives: a page written after it was sent is resent or discarded', () => {
  fc.assert(
    fc.property(scenarioArb(['precopy', 'hybrid']), (s) => {
      const r = runScenario(s);
      assert.deepEqual(r.violations.stale, [], summary(r));
      if (r.outcome === 'completed') assertRamMatches(r);
    }),
    runs(400),
  );
});

test('3. no pfn is demanded twice while in flight; no arrival overwrites a present page', () => {
  fc.assert(
    fc.property(scenarioArb(['postcopy', 'hybrid', 'postcopy']), (s) => {
      const r = runScenario(s);
      assert.deepEqual(r.violations.demand, [], summary(r));
      assert.deepEqual(r.violations.overwrite, [], summary(r));
      assert.deepEqual(r.violations.lanes, [], summary(r));
      // Independently of the running check: after the switchover a page, once present, stays
      // present, so over the whole run each pfn is demanded at most once.
      const asked = new Set<number>();
      for (const d of r.demands)
        for (const p of d) {
          assert.ok(!asked.has(p), `pfn ${p} demanded twice: ${summary(r)}`);
          asked.add(p);
        }
      assert.equal(asked.size, r.dest.stats.remoteFaults, summary(r));
      if (r.outcome === 'completed') {
        assert.equal(r.dest.stats.faultLatencyUs.length, r.dest.stats.remoteFaults, summary(r));
        assert.equal(r.dest.outstanding, 0, summary(r));
      }
    }),
    runs(500),
  );
});

test('4. byte and page counts add up', () => {
  fc.assert(
    fc.property(scenarioArb(ALL), (s) => {
      const r = runScenario(s);
      assert.ok(!r.hung, summary(r));
      assert.deepEqual(r.violations.wire, [], summary(r));
      const st = r.source.stats;
      const h = r.handed;
      const sent = st.pagesSent;
      const nonZero = (k: keyof typeof h.byKind) => h.byKind[k].pages - h.byKind[k].zero;
      assert.equal(sent.bulk + sent.urgent + sent.prepaged + sent.resent + sent.zero, h.pages, summary(r));
      assert.equal(sent.zero, h.zeroPages, summary(r));
      assert.equal(sent.urgent, nonZero('urgent'), summary(r));
      assert.equal(sent.prepaged, nonZero('prepaged'), summary(r));
      assert.equal(sent.bulk + sent.resent, nonZero('bulk') + nonZero('resent'), summary(r));
      // zero pages are attributed to first sends, so `resent` may undercount by at most those
      const bulkZeros = h.byKind.bulk.zero + h.byKind.resent.zero;
      assert.ok(sent.resent <= h.repeats && sent.resent >= h.repeats - bulkZeros, summary(r));
      assert.equal(st.bytesSent, h.batchBytes + h.deviceStateBytes, summary(r));
      assert.ok(h.switchovers <= 1, summary(r));
      if (r.outcome === 'completed') assert.equal(h.switchovers, 1, summary(r));

      const c = s.config;
      if (c.mode === 'postcopy') {
        assert.deepEqual(st.roundPages, [], summary(r));
        // the background push sends every page once; demands and prepaging only reorder it,
        // except that a page demanded while its copy is queued may be sent again, urgently
        const { resendInFlight, urgentLane } = c.postcopy;
        if (!resendInFlight || !urgentLane) assert.equal(st.demandResends, 0, summary(r));
        assert.ok(h.urgentRepeats <= st.demandResends, summary(r));
        if (r.outcome === 'completed') assert.equal(h.pages - h.urgentRepeats, s.pageCount, summary(r));
        return;
      }
      assert.deepEqual(st.roundPages, r.observedRounds, `rounds as seen on the wire: ${summary(r)}`);
      assert.equal(st.roundPages.length, st.rounds, summary(r));
      assert.ok(st.roundPages.length >= 1, summary(r));
      assert.ok(st.roundPages[0] <= s.pageCount, summary(r));
      // With no downtime budget the first round is a full pass over RAM (with one, the
      // stop rule may be checked, and the dirty log synced, before the pass ends).
      if (c.stop.downtimeLimitMs === 0) assert.equal(st.roundPages[0], s.pageCount, summary(r));
    }),
    runs(400),
  );
});

test('5. every run ends with an explicit outcome, in bounded steps; aborted ⇒ guest only on the source', () => {
  fc.assert(
    fc.property(scenarioArb(ALL), (s) => {
      const r = runScenario(s);
      assert.ok(!r.hung, `no outcome after ${r.steps} steps: ${summary(r)}`);
      assert.ok(r.outcome !== undefined, `source and destination disagree: ${summary(r)}`);
      assert.ok(expectedOutcomes(s).includes(r.outcome), `unexpected outcome: ${summary(r)}`);
      if (r.outcome === 'aborted') {
        assert.deepEqual(r.guestStopped, [], `guest stopped on the source: ${summary(r)}`);
        assert.deepEqual(r.guestResumed, [], `guest resumed on the destination: ${summary(r)}`);
      }
      if (r.outcome === 'completed') {
        assert.equal(r.guestStopped.length, 1, summary(r));
        assert.equal(r.guestResumed.length, 1, summary(r));
      }
    }),
    runs(500),
  );
});

test('6. precopy completed ⇒ a downtime window: guest-stopped, then guest-resumed', () => {
  fc.assert(
    fc.property(scenarioArb(['precopy']), (s) => {
      const r = runScenario(s);
      if (r.outcome !== 'completed') return;
      assert.equal(r.guestStopped.length, 1, summary(r));
      assert.equal(r.guestResumed.length, 1, summary(r));
      const [stopped] = r.guestStopped;
      const [resumed] = r.guestResumed;
      assert.ok(resumed.step >= stopped.step && resumed.at >= stopped.at, summary(r));
      const resumedIndex = r.destEvents.findIndex((e) => e.type === 'guest-resumed');
      const stoppedIndex = r.sourceEvents.findIndex((e) => e.type === 'guest-stopped');
      assert.ok(resumedIndex >= 0 && stoppedIndex >= 0, summary(r));
      if (s.config.stop.onNoConvergence !== 'postcopy') assert.equal(resumed.postcopy, false, summary(r));
    }),
    runs(400),
  );
});
