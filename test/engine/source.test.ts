// Targeted behaviours of the source and destination engines and the stop policies.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { type MigrationConfig, migrationConfig } from '../../src/engine/config.ts';
import { MigrationDestination } from '../../src/engine/destination.ts';
import type { PageBatch, SourceMessage } from '../../src/engine/messages.ts';
import type { PageSet } from '../../src/engine/page-set.ts';
import {
  type DirtyLog,
  type GuestMemory,
  MigrationSource,
  type SourceEvent,
} from '../../src/engine/source.ts';
import {
  combine,
  deadline,
  downtimeLimit,
  maxBytes,
  maxRounds,
  type PrecopyProgress,
} from '../../src/engine/stop-policy.ts';

const memory = (pageCount: number, zeroFrom = pageCount): GuestMemory => ({
  pageCount,
  zeroPagesIn: (start, count) => Math.max(0, start + count - Math.max(start, zeroFrom)),
});

/** A dirty log that reports `perSync` as written at every sync after the first. */
function scriptedLog(perSync: (sync: number) => [number, number][]): DirtyLog {
  let n = 0;
  return {
    sync(_now: number, into: PageSet) {
      for (const [s, e] of n === 0 ? [] : perSync(n)) into.addRange(s, e);
      n++;
    },
  };
}

const progress = (over: Partial<PrecopyProgress>): PrecopyProgress => ({
  elapsedMs: 0,
  round: 1,
  remainingBytes: 0,
  bandwidth: 0,
  bytesSent: 0,
  ramBytes: 1 << 30,
  ...over,
});

test('stop policies: each rule says stop, continue or give up on its own terms', () => {
  const qemu = downtimeLimit(300);
  assert.equal(qemu.verdict(progress({ remainingBytes: 30e6, bandwidth: 100e6 })), 'stop');
  assert.equal(qemu.verdict(progress({ remainingBytes: 31e6, bandwidth: 100e6 })), 'continue');
  assert.equal(
    qemu.verdict(progress({ remainingBytes: 1, bandwidth: 0 })),
    'continue',
    'unmeasured bandwidth never stops',
  );
  assert.equal(maxRounds(3).verdict(progress({ round: 2 })), 'continue');
  assert.equal(maxRounds(3).verdict(progress({ round: 3 })), 'give-up', 'three rounds sent, none converged');
  assert.equal(maxBytes(2).verdict(progress({ bytesSent: 2 * (1 << 30) - 1 })), 'continue');
  assert.equal(maxBytes(2).verdict(progress({ bytesSent: 2 * (1 << 30) })), 'give-up');
  assert.equal(deadline(1000).verdict(progress({ elapsedMs: 999 })), 'continue');
  assert.equal(deadline(1000).verdict(progress({ elapsedMs: 1000 })), 'give-up');
  const both = combine([qemu, maxRounds(1)]);
  assert.equal(
    both.verdict(progress({ round: 5, remainingBytes: 1, bandwidth: 100e6 })),
    'stop',
    'stopping wins',
  );
  assert.equal(both.verdict(progress({ round: 5, remainingBytes: 1e9, bandwidth: 100e6 })), 'give-up');
});

/** Drives a source against a destination over one FIFO lane until neither has work. */
function drive(src: MigrationSource, dst: MigrationDestination, budget = 64 * 4104) {
  const wire: SourceMessage[] = [];
  const events: SourceEvent[] = [];
  let now = 0;
  /** The driver's side of the stop: the guest stops when asked, then the engine goes on. */
  const drain = () => {
    for (let e = src.takeEvents(); e.length > 0; e = src.takeEvents())
      for (const ev of e) {
        events.push(ev);
        if (ev.type === 'stop-guest') src.guestStopped(now);
      }
  };
  src.start(now);
  for (let step = 0; step < 100_000; step++) {
    now += 10;
    drain();
    let moved = false;
    for (const lane of ['urgent', 'bulk'] as const) {
      if (!src.hasWork(lane)) continue;
      const m = src.next(now, lane, budget);
      if (!m) continue;
      moved = true;
      wire.push(m);
      src.sent(now + 5, m.type === 'pages' ? m.batch.pageCount * 4104 : 64);
      dst.receive(now + 5, m);
    }
    for (const m of dst.takeMessages()) src.receive(now + 5, m);
    drain();
    if (!moved && src.phase === 'finished') break;
    if (!moved && !src.hasWork('bulk') && !src.hasWork('urgent')) break;
  }
  return { wire, events, destEvents: dst.takeEvents() };
}

test('precopy: the first round sends every page, zero pages counted as such', () => {
  const src = new MigrationSource(
    migrationConfig(),
    memory(1000, 600),
    scriptedLog(() => []),
  );
  const dst = new MigrationDestination(1000);
  const { events } = drive(src, dst);
  assert.equal(src.outcome, 'completed');
  assert.equal(src.stats.roundPages[0], 1000);
  assert.equal(src.stats.pagesSent.zero, 400);
  assert.equal(src.stats.pagesSent.bulk, 600);
  assert.equal(dst.present.size, 1000);
  assert.deepEqual(
    events.map((e) => e.type),
    ['stop-guest', 'guest-stopped', 'finished'],
  );
});

test('precopy: a page dirtied after it was sent is sent again before the switchover', () => {
  // pages 10..20 are written at every sync until the fifth
  const log = scriptedLog((n) => (n < 5 ? [[10, 20]] : []));
  const cfg = migrationConfig({ stop: { downtimeLimitMs: 0.001 } });
  const src = new MigrationSource(cfg, memory(500), log);
  const { wire } = drive(src, new MigrationDestination(500));
  assert.equal(src.outcome, 'completed');
  const switchover = wire.findIndex((m) => m.type === 'switchover');
  const sends = wire
    .slice(0, switchover)
    .filter((m): m is { type: 'pages'; batch: PageBatch } => m.type === 'pages')
    .filter((m) => runsCover(m.batch.runs, 15)).length;
  assert.equal(sends, 5, 'page 15 went once in the first round and once after each of four writes');
  assert.equal(src.stats.pagesSent.resent, 40);
});

function runsCover(runs: number[], pfn: number): boolean {
  for (let i = 0; i < runs.length; i += 2) if (pfn >= runs[i] && pfn < runs[i] + runs[i + 1]) return true;
  return false;
}

test('precopy that cannot converge ends as its policy says', () => {
  const always = () => scriptedLog(() => [[0, 400]]);
  const run = (onNoConvergence: 'abort' | 'force' | 'postcopy') => {
    const cfg = migrationConfig({ stop: { downtimeLimitMs: 0.001, maxRounds: 3, onNoConvergence } });
    const src = new MigrationSource(cfg, memory(500), always());
    const dst = new MigrationDestination(500);
    const r = drive(src, dst);
    return { src, dst, types: r.events.map((e) => e.type), destTypes: r.destEvents.map((e) => e.type) };
  };
  const abort = run('abort');
  assert.equal(abort.src.outcome, 'aborted');
  assert.ok(!abort.types.includes('guest-stopped'), 'the guest never stopped');
  assert.ok(!abort.destTypes.includes('guest-resumed'));
  assert.equal(abort.src.stats.rounds, 3);
  const force = run('force');
  assert.equal(force.src.outcome, 'completed');
  assert.ok(force.types.includes('guest-stopped'));
  assert.equal(force.dst.present.size, 500);
  const post = run('postcopy');
  assert.equal(post.src.outcome, 'completed');
  assert.ok(post.types.includes('postcopy-started'));
  assert.equal(post.dst.present.size, 500);
});

test('hybrid switches to postcopy after its rounds, discarding what the destination holds stale', () => {
  const cfg = migrationConfig({ mode: 'hybrid', hybrid: { rounds: 2 }, stop: { downtimeLimitMs: 0.001 } });
  const src = new MigrationSource(
    cfg,
    memory(300),
    scriptedLog(() => [[0, 50]]),
  );
  const dst = new MigrationDestination(300);
  const { wire, events } = drive(src, dst);
  assert.equal(src.outcome, 'completed');
  assert.equal(src.stats.rounds, 2);
  assert.ok(events.some((e) => e.type === 'postcopy-started'));
  const sw = wire.find((m) => m.type === 'switchover');
  assert.ok(sw && sw.type === 'switchover' && sw.postcopy);
  assert.deepEqual(sw.discard, [0, 50], 'the pages written since their last send');
});

test('hybrid with no round count switches once dirtying stops shrinking', () => {
  // the same 100 pages every sync: the dirty set never shrinks
  const cfg = migrationConfig({ mode: 'hybrid', stop: { downtimeLimitMs: 0.001 } });
  const src = new MigrationSource(
    cfg,
    memory(1000),
    scriptedLog(() => [[0, 100]]),
  );
  drive(src, new MigrationDestination(1000));
  assert.equal(src.outcome, 'completed');
  assert.equal(src.stats.rounds, 2, 'round 2 dirtied as much as round 1');
});

test('postcopy: a remote fault is answered on the urgent lane with its prepaging window, and the scan jumps', () => {
  const cfg = migrationConfig({ mode: 'postcopy', postcopy: { prepageForward: 2, prepageBackward: 1 } });
  const src = new MigrationSource(
    cfg,
    memory(10_000),
    scriptedLog(() => []),
  );
  const dst = new MigrationDestination(10_000);
  src.start(0);
  assert.equal(src.phase, 'stopping', 'postcopy first stops the guest');
  assert.equal(src.next(0, 'bulk', 1 << 20), null, 'nothing moves until the guest has stopped');
  src.guestStopped(0);
  const sw = src.next(0, 'bulk', 1 << 20);
  assert.equal(sw?.type, 'switchover');
  dst.receive(1, sw!);
  assert.equal(dst.phase, 'postcopy');
  assert.equal(dst.fault(2, 5000), 'requested');
  assert.equal(dst.fault(2, 5000), 'waiting', 'a second fault waits for the first request');
  const msgs = dst.takeMessages();
  const demand = msgs.find((m) => m.type === 'demand');
  assert.deepEqual(demand, { type: 'demand', pfns: [5000] });
  src.receive(3, demand!);
  const urgent = src.next(3, 'urgent', 1 << 20);
  assert.ok(urgent?.type === 'pages');
  assert.deepEqual(urgent.batch.runs, [5000, 1]);
  assert.equal(urgent.batch.kind, 'urgent');
  const prepaged = src.next(3, 'bulk', 1 << 20);
  assert.ok(prepaged?.type === 'pages');
  assert.equal(prepaged.batch.kind, 'prepaged');
  assert.deepEqual(prepaged.batch.runs, [4999, 1, 5001, 2]);
  const push = src.next(3, 'bulk', 4 * 4104);
  assert.ok(push?.type === 'pages');
  assert.equal(push.batch.runs[0], 5003, 'the background scan continues after the window');
  const arrival = dst.receive(4, urgent);
  assert.deepEqual(arrival, { install: [5000, 1], awaited: 1 });
  assert.equal(dst.stats.faultLatencyUs[0], 2000);
});

test('postcopy without an urgent lane: demand pages go first on the bulk lane', () => {
  const cfg = migrationConfig({ mode: 'postcopy', postcopy: { urgentLane: false } });
  const src = new MigrationSource(
    cfg,
    memory(1000),
    scriptedLog(() => []),
  );
  src.start(0);
  src.guestStopped(0);
  src.next(0, 'bulk', 1 << 20); // switchover
  src.next(0, 'bulk', 10 * 4104); // some background push
  src.receive(1, { type: 'demand', pfns: [900] });
  assert.equal(src.hasWork('urgent'), false);
  assert.equal(src.next(1, 'urgent', 1 << 20), null);
  const m = src.next(1, 'bulk', 1 << 20);
  assert.ok(m?.type === 'pages');
  assert.deepEqual(m.batch.runs, [900, 1]);
  assert.equal(m.batch.kind, 'urgent');
});

test('postcopy: a page already present is never overwritten by a later arrival', () => {
  const dst = new MigrationDestination(100);
  dst.receive(0, { type: 'switchover', postcopy: true, discard: [], deviceStateBytes: 0 });
  const first = dst.receive(1, {
    type: 'pages',
    batch: { kind: 'bulk', runs: [10, 5], pageCount: 5, zeroCount: 0 },
  });
  assert.deepEqual(first?.install, [10, 5]);
  const again = dst.receive(2, {
    type: 'pages',
    batch: { kind: 'bulk', runs: [8, 10], pageCount: 10, zeroCount: 0 },
  });
  assert.deepEqual(again?.install, [8, 2, 15, 3], 'only the pages that were missing');
  assert.equal(dst.stats.duplicatesDropped, 5);
});

test('a destination that aborts during stop-and-copy leaves the guest running on the source', () => {
  const src = new MigrationSource(
    migrationConfig(),
    memory(100),
    scriptedLog(() => []),
  );
  src.start(0);
  let m = src.next(0, 'bulk', 1 << 20);
  assert.equal(m?.type, 'pages');
  src.sent(200, 100 * 4104);
  m = src.next(200, 'bulk', 1 << 20);
  assert.equal(src.phase, 'stopping');
  src.guestStopped(200);
  assert.equal(src.phase, 'stop-and-copy');
  src.receive(201, { type: 'abort', reason: 'disk full' });
  const types = src.takeEvents().map((e) => e.type);
  assert.deepEqual(types, ['stop-guest', 'guest-stopped', 'guest-continued', 'finished']);
  assert.equal(src.outcome, 'aborted');
});

test('a cancel while the guest stops aborts the migration; after the stop it is too late', () => {
  const stopping = () => {
    const src = new MigrationSource(
      migrationConfig(),
      memory(100),
      scriptedLog(() => []),
    );
    src.start(0);
    src.next(0, 'bulk', 1 << 20);
    src.sent(200, 100 * 4104);
    src.next(200, 'bulk', 1 << 20);
    assert.equal(src.phase, 'stopping');
    return src;
  };
  const src = stopping();
  assert.equal(src.cancel(201, 'the clients could not be held'), true);
  assert.equal(src.outcome, 'aborted');
  assert.deepEqual(
    src.takeEvents().map((e) => e.type),
    ['stop-guest', 'finished'],
  );
  const abort = src.next(201, 'bulk', 1 << 20);
  assert.deepEqual(abort, { type: 'abort', reason: 'the clients could not be held' });
  assert.throws(() => src.guestStopped(202), /guestStopped in phase finished/);

  const late = stopping();
  late.guestStopped(202);
  assert.equal(late.cancel(203, 'too late'), false);
  assert.equal(late.phase, 'stop-and-copy');
});

test('the destination refuses pages outside guest RAM and a switchover with pages missing', () => {
  const dst = new MigrationDestination(10);
  dst.receive(0, { type: 'pages', batch: { kind: 'bulk', runs: [8, 5], pageCount: 5, zeroCount: 0 } });
  assert.equal(dst.phase, 'aborted');
  assert.match(JSON.stringify(dst.takeMessages()), /outside RAM/);
  const d2 = new MigrationDestination(10);
  d2.receive(0, { type: 'switchover', postcopy: false, discard: [], deviceStateBytes: 0 });
  assert.equal(d2.phase, 'aborted');
  assert.match(JSON.stringify(d2.takeMessages()), /10 pages missing/);
});

/** A postcopy source past its switchover over `pages` pages, with `pushed` pages of push sent. */
function postcopySource(pages: number, pushed: number, postcopy: Partial<MigrationConfig['postcopy']> = {}) {
  const cfg = migrationConfig({ mode: 'postcopy', postcopy: { prepageForward: 2, ...postcopy } });
  const src = new MigrationSource(
    cfg,
    memory(pages),
    scriptedLog(() => []),
  );
  src.start(0);
  src.guestStopped(0);
  src.next(0, 'bulk', 1 << 20); // switchover
  if (pushed > 0) src.next(0, 'bulk', pushed * 4104);
  return src;
}

test('postcopy: a demand answered off the engine is accounted as sent, prepaged around, and never pushed', () => {
  const src = postcopySource(1000, 10);
  src.demandServed(1, [500, 500, 3], 1);
  assert.equal(src.hasWork('urgent'), false, 'the pages left already: nothing is queued for the urgent lane');
  assert.deepEqual(src.stats.pagesSent.urgent, 1, 'one page new to the wire (the other was zero)');
  assert.equal(src.stats.pagesSent.zero, 1);
  assert.equal(src.stats.demandResends, 1, 'page 3 had gone with the push: a resend');
  const prepaged = src.next(1, 'bulk', 1 << 20);
  assert.ok(prepaged?.type === 'pages');
  assert.equal(prepaged.batch.kind, 'prepaged');
  assert.deepEqual(prepaged.batch.runs, [501, 2]);
  const sent = new Set<number>();
  for (let m = src.next(2, 'bulk', 64 * 4104); m; m = src.next(2, 'bulk', 64 * 4104))
    if (m.type === 'pages')
      for (let i = 0; i < m.batch.runs.length; i += 2)
        for (let p = m.batch.runs[i]; p < m.batch.runs[i] + m.batch.runs[i + 1]; p++) sent.add(p);
  assert.equal(sent.has(500), false, 'the push skips the page answered');
  assert.equal(sent.size, 1000 - 10 - 1 - 2, 'and sends every other page once');
});

test('a demand answered off the engine outside postcopy, or outside RAM, records nothing', () => {
  const cfg = migrationConfig({ mode: 'precopy' });
  const pre = new MigrationSource(
    cfg,
    memory(100),
    scriptedLog(() => []),
  );
  pre.start(0);
  pre.demandServed(1, [5], 0);
  assert.equal(pre.stats.pagesSent.urgent, 0);
  const post = postcopySource(100, 0);
  post.demandServed(1, [100, -1, 2.5], 0);
  assert.equal(post.stats.pagesSent.urgent, 0);
  assert.equal(post.stats.bytesSent > 0, true, 'the switchover only');
});

test('postcopy: a fault whose request the runtime sent is recorded once, without a message, and settled by its page', () => {
  const dst = new MigrationDestination(100);
  dst.receive(0, { type: 'switchover', postcopy: true, discard: [], deviceStateBytes: 0 });
  dst.takeMessages();
  assert.equal(dst.faultRequested(1, 40), 'requested');
  assert.equal(dst.faultRequested(1.5, 40), 'waiting', 'a second fault waits for the first request');
  assert.deepEqual(
    dst.takeMessages().filter((m) => m.type === 'demand'),
    [],
    'the request went already',
  );
  assert.equal(dst.stats.remoteFaults, 1);
  const arrival = dst.receive(1.25, {
    type: 'pages',
    batch: { kind: 'urgent', runs: [40, 1], pageCount: 1, zeroCount: 0 },
  });
  assert.deepEqual(arrival, { install: [40, 1], awaited: 1 });
  assert.deepEqual(dst.stats.faultLatencyUs, [250]);
  assert.equal(dst.faultRequested(2, 40), 'present');
});

test('property: with demands answered off the engine at random moments, every page still goes, none after its answer', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 1500 }),
      fc.integer({ min: 0, max: 4 }),
      fc.array(fc.record({ step: fc.nat(200), pfns: fc.array(fc.nat(1499), { maxLength: 4 }) }), {
        maxLength: 30,
      }),
      (n, forward, demands) => {
        const src = postcopySource(n, 0, { prepageForward: forward });
        const answered = new Map<number, number>(); // pfn -> step
        let urgent = 0;
        const pushedAt = new Map<number, number>();
        let complete = false;
        for (let step = 0; step < 10_000 && !complete; step++) {
          for (const d of demands.filter((x) => x.step === step)) {
            const pfns = d.pfns.filter((p) => p < n);
            src.demandServed(step, pfns, 0);
            urgent += new Set(pfns).size; // a page asked again is sent again
            for (const p of pfns) if (!answered.has(p)) answered.set(p, step);
          }
          const m = src.next(step, 'bulk', 16 * 4104);
          if (!m) break;
          if (m.type === 'complete') complete = true;
          if (m.type !== 'pages') continue;
          for (let i = 0; i < m.batch.runs.length; i += 2)
            for (let p = m.batch.runs[i]; p < m.batch.runs[i] + m.batch.runs[i + 1]; p++) {
              assert.ok(
                !(answered.has(p) && !pushedAt.has(p)),
                `page ${p} pushed after its demand was answered`,
              );
              pushedAt.set(p, step);
            }
        }
        assert.ok(complete, 'the push completes');
        for (let p = 0; p < n; p++) assert.ok(pushedAt.has(p) || answered.has(p), `page ${p} never sent`);
        assert.equal(src.stats.pagesSent.urgent, urgent);
      },
    ),
  );
});
