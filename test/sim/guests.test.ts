// The guest-cooperative fault experiment through `simulate()`: workloads running in the
// simulated guest before, during and after a migration. Every check compares runs that
// differ in one field (or derives its bound from the scenario), so none rests on a
// hard-coded result of the model.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MigrationReport, Report, WorkloadReport } from '../../src/report/schema.ts';
import { DEFAULT_COSTS, type RuntimeCosts } from '../../src/sim/guest-runtime.ts';
import { Rng } from '../../src/sim/rng.ts';
import { type Scenario, validateScenario } from '../../src/sim/scenario.ts';
import { workloadModel } from '../../src/sim/vm.ts';
import { simulate, World } from '../../src/sim/world.ts';

const NIC_MBPS = 1000;
const RAM_MIB = 1024;
const USED_MIB = 768;
const HOT_MIB = 256;
const PAGES_PER_MIB = 256;

interface Changes {
  src?: Record<string, unknown>;
  dst?: Record<string, unknown>;
  vm?: Record<string, unknown>;
  workload?: Record<string, unknown>;
  migration?: Record<string, unknown>;
}

/**
 * A 1 GiB VM (768 MiB in use) running a web server with 16 workers on one vCPU, moved by
 * postcopy with cooperative faults over 1 Gbit/s at t = 2 s; variants change single fields.
 */
function scenario(c: Changes = {}): Scenario {
  return validateScenario({
    name: 'guests',
    settleS: 5,
    durationS: 120,
    hosts: [
      { name: 'src', nicMbps: NIC_MBPS, ...c.src },
      { name: 'dst', nicMbps: NIC_MBPS, ...c.dst },
    ],
    vms: [
      {
        name: 'vm',
        host: 'src',
        ramMiB: RAM_MIB,
        usedMiB: USED_MIB,
        vcpus: 1,
        ...c.vm,
        workload:
          c.workload?.kind && c.workload.kind !== 'web'
            ? c.workload
            : { kind: 'web', hotSetMiB: HOT_MIB, ...c.workload },
      },
    ],
    migrations: [{ vm: 'vm', to: 'dst', atS: 2, mode: 'postcopy', cooperative: true, ...c.migration }],
  });
}

function run(c: Changes = {}, seed = 1): Report {
  const r = simulate(scenario(c), { seed });
  assert.equal(r.migrations.length, 1);
  assert.equal(r.workloads.length, 1);
  assert.equal(r.migrations[0].outcome, 'completed', r.migrations[0].reason);
  return r;
}

const mig = (r: Report): MigrationReport => r.migrations[0];
const wl = (r: Report): WorkloadReport => r.workloads[0];

function rel(r: Report): { first1s: number; first5s: number; first10s: number } {
  const x = wl(r).relativeThroughput;
  assert.ok(x, 'the run has a switchover and a baseline');
  return x;
}

/** Link goodput of the scenario, bytes per ms. */
function goodputBytesPerMs(s: Scenario): number {
  return (NIC_MBPS * 1e6 * s.network.efficiency) / 8 / 1000;
}

/** Runs `fn` with the guest runtime's overhead costs changed, restoring them afterwards. */
function withCosts<T>(patch: Partial<RuntimeCosts>, fn: () => T): T {
  const saved = { ...DEFAULT_COSTS };
  Object.assign(DEFAULT_COSTS, patch);
  try {
    return fn();
  } finally {
    Object.assign(DEFAULT_COSTS, saved);
  }
}

const fmt = (x: number) => x.toFixed(3);

test('many runnable tasks: cooperative faults recover far more throughput after switchover than blocking ones', () => {
  for (const vcpus of [1, 2]) {
    const coop = run({ vm: { vcpus } });
    const block = run({ vm: { vcpus }, migration: { cooperative: false } });
    const c = rel(coop);
    const b = rel(block);
    const what = `${vcpus} vCPU: coop first1s ${fmt(c.first1s)} first5s ${fmt(c.first5s)}, blocking ${fmt(b.first1s)} ${fmt(b.first5s)}`;
    assert.ok(c.first1s >= 1.8 * b.first1s, what);
    assert.ok(c.first5s >= 1.2 * b.first5s, what);
    assert.ok(
      mig(coop).vcpuBlockedMs <= 0.5 * mig(block).vcpuBlockedMs,
      `blocked ${mig(coop).vcpuBlockedMs} ms vs ${mig(block).vcpuBlockedMs} ms`,
    );
    // the reports say which way faults were taken, and the counts agree with it
    assert.equal(mig(coop).cooperative, true);
    assert.equal(wl(coop).cooperative, true);
    assert.equal(mig(block).cooperative, false);
    assert.equal(wl(block).cooperative, false);
    assert.ok(mig(coop).asyncFaults > mig(coop).syncFaults, 'most cooperative faults park the task');
    assert.equal(mig(block).asyncFaults, 0);
    assert.ok(mig(block).syncFaults >= mig(block).remoteFaults);
    if (vcpus === 1)
      assert.equal(
        mig(block).syncFaults,
        mig(block).remoteFaults,
        'one blocked vCPU faults on one page at a time',
      );
    for (const r of [coop, block]) {
      const m = mig(r);
      assert.ok(m.asyncFaults + m.syncFaults >= m.remoteFaults, 'every demand request comes from a fault');
    }
  }
});

test('a single task: cooperative and blocking faults give the same run, but for the cost of halting', () => {
  const single = { workload: { workers: 1, connections: 1 }, vm: { asyncFaultCpuUs: 0 } };
  // Without the per-fault overheads (the fault's CPU, the context switch back from halt)
  // the vCPU has nothing else to run while its only task waits: the runs are identical.
  const [coop, block] = withCosts({ contextSwitchMs: 0 }, () => [
    run(single),
    run({ ...single, migration: { cooperative: false } }),
  ]);
  const c = mig(coop);
  const b = mig(block);
  assert.ok(c.asyncFaults > 0, 'the cooperative run did take async faults');
  assert.deepEqual(wl(coop).throughput, wl(block).throughput);
  assert.deepEqual(wl(coop).latencyMs, wl(block).latencyMs);
  assert.equal(c.remoteFaults, b.remoteFaults);
  assert.equal(c.asyncFaults + c.syncFaults, b.syncFaults);
  assert.deepEqual(c.faultLatencyUs, b.faultLatencyUs);
  assert.deepEqual(c.pagesSent, b.pagesSent);
  assert.deepEqual(c.missingPages, b.missingPages);
  // the time the blocking vCPU spends blocked, the cooperative one spends halted
  const cv = wl(coop).vcpu;
  const bv = wl(block).vcpu;
  assert.equal(cv.length, bv.length);
  for (let i = 0; i < cv.length; i++) {
    assert.ok(Math.abs(cv[i].busyMs - bv[i].busyMs) < 0.01, `bin ${i} busy`);
    const idle = (x: (typeof cv)[number]) => x.haltedMs + x.blockedMs;
    assert.ok(Math.abs(idle(cv[i]) - idle(bv[i])) < 0.01, `bin ${i} halted + blocked`);
  }
  assert.ok(
    c.vcpuBlockedMs < b.vcpuBlockedMs,
    'only kernel-context faults count as blocked when cooperative',
  );

  // With the default overheads the runs drift apart (each fault costs a context switch in
  // the cooperative run), but one task gains nothing from cooperative faults.
  for (const seed of [1, 2, 3]) {
    const dc = rel(run(single, seed));
    const db = rel(run({ ...single, migration: { cooperative: false } }, seed));
    assert.ok(
      Math.abs(dc.first5s - db.first5s) <= 0.1 * db.first5s,
      `seed ${seed}: first5s coop ${fmt(dc.first5s)} vs blocking ${fmt(db.first5s)}`,
    );
  }
});

test('the gain of cooperative faults shrinks to nothing as kernel-context faults take over', () => {
  const gain = new Map<number, number>();
  const blocked = new Map<number, number>();
  for (const f of [0, 0.5, 1]) {
    const coop = run({ workload: { kernelFaultFraction: f } });
    const block = run({ workload: { kernelFaultFraction: f }, migration: { cooperative: false } });
    gain.set(f, rel(coop).first5s / rel(block).first5s);
    blocked.set(f, mig(coop).vcpuBlockedMs);
    if (f === 0) {
      // 16 tasks on one vCPU never reach 64 outstanding faults: nothing blocks
      assert.equal(mig(coop).syncFaults, 0);
      assert.equal(mig(coop).vcpuBlockedMs, 0);
    }
    if (f === 1) {
      // every fault is taken in kernel context and blocks: the same run as blocking mode
      assert.equal(mig(coop).asyncFaults, 0);
      assert.equal(mig(coop).syncFaults, mig(block).syncFaults);
      assert.deepEqual(wl(coop).throughput, wl(block).throughput);
      assert.equal(mig(coop).vcpuBlockedMs, mig(block).vcpuBlockedMs);
    }
  }
  const [g0, g5, g1] = [gain.get(0)!, gain.get(0.5)!, gain.get(1)!];
  const what = `gains (first5s coop/blocking) at 0: ${fmt(g0)}, 0.5: ${fmt(g5)}, 1: ${fmt(g1)}`;
  assert.ok(g0 >= 1.2, what);
  assert.equal(g1, 1, what);
  assert.ok(g5 > g1 && g5 < g0, what);
  assert.ok(
    blocked.get(0)! < blocked.get(0.5)! && blocked.get(0.5)! < blocked.get(1)!,
    'blocked time grows with f',
  );
});

/**
 * Samples, every 100 ms of postcopy, the share of a fixed sample of the workload's own page
 * touches that are present on the destination, and the remote faults so far.
 */
function pageArrival(s: Scenario, seed: number): { report: Report; coverage: number[]; faults: number[] } {
  const model = workloadModel(s.vms[0], USED_MIB * PAGES_PER_MIB);
  assert.ok(model);
  const draw = new Rng(99);
  const touches: number[] = [];
  for (let i = 0; i < 100; i++) touches.push(...model.tasks[0].next(draw, true).pages);
  const coverage: number[] = [];
  const faults: number[] = [];
  const world: World = new World(s, {
    seed,
    progress: {
      everyMs: 100,
      report: (_now, progress) => {
        const m = world.migrations[0];
        if (m?.destination.phase !== 'postcopy') return;
        let present = 0;
        for (const p of touches) if (m.destination.present.has(p)) present++;
        coverage.push(present / touches.length);
        faults.push(progress[0].remoteFaults);
      },
    },
  });
  return { report: world.run(), coverage, faults };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

test('more outstanding async faults: faster recovery and the workload’s pages arrive sooner; postcopy stays bandwidth-bound', () => {
  const s1 = scenario({ vm: { asyncFaultLimit: 1 } });
  const s64 = scenario({ vm: { asyncFaultLimit: 64 } });
  const one = pageArrival(s1, 1);
  const many = pageArrival(s64, 1);
  for (const x of [one, many]) assert.equal(mig(x.report).outcome, 'completed');
  const r1 = rel(one.report);
  const r64 = rel(many.report);
  assert.ok(
    r64.first5s >= 1.05 * r1.first5s,
    `first5s: limit 64 ${fmt(r64.first5s)}, limit 1 ${fmt(r1.first5s)}`,
  );
  assert.ok(r64.first1s > r1.first1s);
  assert.ok(mig(one.report).syncFaults > mig(many.report).syncFaults, 'limit 1 blocks more often');
  // demand fetches in the first second of postcopy, and how much of what the workload
  // touches is already on the destination during that second
  assert.ok(one.faults.length >= 10 && many.faults.length >= 10);
  assert.ok(many.faults[9] >= 1.3 * one.faults[9], `faults in 1 s: ${many.faults[9]} vs ${one.faults[9]}`);
  const c1 = mean(one.coverage.slice(0, 10));
  const c64 = mean(many.coverage.slice(0, 10));
  assert.ok(c64 > c1, `workload pages present over the first second: ${fmt(c64)} vs ${fmt(c1)}`);
  // the background push keeps the link full either way: postcopy lasts as long as the
  // bytes take on the wire, whatever the limit
  for (const [s, x] of [
    [s1, one],
    [s64, many],
  ] as const) {
    const m = mig(x.report);
    const wire = m.bytesSent / goodputBytesPerMs(s);
    assert.ok(
      Math.abs(m.postcopyMs - wire) <= 0.01 * wire,
      `postcopy ${m.postcopyMs} ms, wire time ${wire} ms`,
    );
  }
  const p1 = mig(one.report).postcopyMs;
  const p64 = mig(many.report).postcopyMs;
  assert.ok(Math.abs(p1 - p64) <= 0.01 * p1, `postcopyMs limit 1 ${p1}, limit 64 ${p64}`);
});

test('the urgent lane cuts remote-fault latency while the background push fills the bulk lane', () => {
  const s = scenario();
  const lane = run();
  const noLane = run({ migration: { urgentLane: false } });
  const p50 = mig(lane).faultLatencyUs.p50;
  const p50NoLane = mig(noLane).faultLatencyUs.p50;
  assert.ok(p50 * 10 <= p50NoLane, `p50 ${p50} µs with the urgent lane, ${p50NoLane} µs without`);
  // without the lane a demand page queues behind the bulk backlog, refilled whenever half
  // a socket buffer has drained
  const halfBufferUs = ((s.network.socketBufferKiB * 1024) / 2 / goodputBytesPerMs(s)) * 1000;
  assert.ok(p50NoLane >= halfBufferUs, `p50 ${p50NoLane} µs, half a socket buffer ${fmt(halfBufferUs)} µs`);
  assert.ok(p50 < halfBufferUs / 10);
  assert.ok(mig(lane).pagesSent.urgent > 0);
  assert.ok(rel(lane).first1s > rel(noLane).first1s);
});

test('report schema: migration fault fields, workload series in 100 ms bins, vCPU time per bin', () => {
  const vcpus = 2;
  const s = scenario({ vm: { vcpus } });
  const r = simulate(s, { seed: 3 });
  const m = mig(r);
  assert.equal(m.outcome, 'completed');
  assert.equal(m.mode, 'postcopy');
  assert.equal(m.cooperative, true);
  for (const k of ['asyncFaults', 'syncFaults', 'vcpuBlockedMs', 'switchoverMs', 'remoteFaults'] as const) {
    assert.equal(typeof m[k], 'number', k);
    assert.ok(Number.isFinite(m[k]) && m[k] >= 0, `${k} = ${m[k]}`);
  }
  assert.ok(m.switchoverMs >= m.startMs && m.switchoverMs <= m.startMs + m.totalTimeMs);
  assert.ok(m.asyncFaults > 0 && m.syncFaults > 0, 'web has kernel-context faults by default');
  // missing pages: sampled from the switchover, never rising in postcopy, none at the end
  assert.ok(m.missingPages.length > 1);
  assert.equal(m.missingPages[0][0], m.switchoverMs);
  assert.equal(m.missingPages[0][1], RAM_MIB * PAGES_PER_MIB);
  for (let i = 1; i < m.missingPages.length; i++) {
    assert.ok(m.missingPages[i][0] >= m.missingPages[i - 1][0], 'sample times ascend');
    assert.ok(m.missingPages[i][1] <= m.missingPages[i - 1][1], 'missing pages only go down');
  }
  assert.equal(m.missingPages.at(-1)![1], 0);
  // fault latency histogram: powers of two from 16 µs, one count per remote fault
  const h = m.faultLatencyHistogram;
  assert.ok(h.length > 0);
  h.forEach(([bound, count], i) => {
    assert.equal(bound, 16 * 2 ** i);
    assert.ok(Number.isInteger(count) && count >= 0);
  });
  assert.equal(
    h.reduce((n, [, c]) => n + c, 0),
    m.remoteFaults,
  );
  assert.ok(h.at(-1)![0] >= m.faultLatencyUs.max && h.at(-1)![0] / 2 < m.faultLatencyUs.max);

  const w = wl(r);
  assert.equal(w.vm, 'vm');
  assert.equal(w.kind, 'web');
  assert.equal(w.vcpus, vcpus);
  assert.equal(w.mode, 'postcopy');
  assert.equal(w.cooperative, true);
  const endMs = m.startMs + m.totalTimeMs + s.settleS * 1000;
  const bins = Math.ceil(endMs / 100);
  assert.equal(w.throughput.length, bins, 'throughput bins cover the run');
  assert.equal(w.latencyMs.length, bins);
  w.throughput.forEach(([t, ops], i) => {
    assert.equal(t, i * 100);
    assert.ok(ops >= 0);
  });
  w.latencyMs.forEach(([t, p50, p99], i) => {
    assert.equal(t, i * 100);
    assert.ok(p50 >= 0 && p99 >= p50, `bin ${i}: p50 ${p50} p99 ${p99}`);
  });
  const rt = rel(r);
  for (const k of ['first1s', 'first5s', 'first10s'] as const)
    assert.ok(Number.isFinite(rt[k]) && rt[k] > 0, k);
  assert.ok(w.baselineOpsPerSec > 0);
  // vCPU time: each bin holds at most 100 ms per vCPU; the whole run adds up to the run's
  // length per vCPU, less the downtime (the guest runs nowhere then)
  assert.equal(w.vcpu.length, bins);
  let total = 0;
  w.vcpu.forEach((b, i) => {
    assert.equal(b.tMs, i * 100);
    for (const x of [b.busyMs, b.haltedMs, b.blockedMs]) assert.ok(x >= 0);
    const sum = b.busyMs + b.haltedMs + b.blockedMs;
    assert.ok(sum <= 100 * vcpus + 0.01, `bin ${i}: ${sum} ms`);
    if (b.tMs + 100 <= m.switchoverMs)
      assert.ok(Math.abs(sum - 100 * vcpus) < 0.01, `bin ${i} before switchover`);
    total += sum;
  });
  const expected = vcpus * (endMs - m.downtimeMs);
  assert.ok(Math.abs(total - expected) < 0.01 * bins, `vCPU time ${total} ms, expected ${expected} ms`);
  const blockedInBins = w.vcpu.reduce((n, b) => n + b.blockedMs, 0);
  assert.ok(Math.abs(blockedInBins - m.vcpuBlockedMs) < 0.01 * bins, 'blocked bins add up to vcpuBlockedMs');
});

test('CPU is conserved: completed operations never need more CPU than the vCPUs were busy', () => {
  for (const cooperative of [true, false]) {
    const s = scenario({ workload: { kernelFaultFraction: 0 }, migration: { cooperative } });
    const r = simulate(s, { seed: 1 });
    const w = wl(r);
    const web = s.vms[0].workload as { cpuMs: number; workers: number };
    const ops = (i: number) => (w.throughput[i]?.[1] ?? 0) / 10;
    const busy = (i: number) => w.vcpu[i]?.busyMs ?? 0;
    let allOps = 0;
    let allBusy = 0;
    for (let i = 0; i < w.throughput.length; i++) {
      allOps += ops(i);
      allBusy += busy(i);
    }
    assert.ok(
      allOps * web.cpuMs <= allBusy,
      `${cooperative ? 'coop' : 'blocking'}: ${allOps} ops × ${web.cpuMs} ms > ${fmt(allBusy)} ms busy`,
    );
    // each second after switchover: tasks may carry at most one operation's CPU into it
    const first = Math.floor(mig(r).switchoverMs / 100);
    for (let k = 0; k < 5; k++) {
      let o = 0;
      let b = 0;
      for (let i = first + 10 * k; i < first + 10 * (k + 1); i++) {
        o += ops(i);
        b += busy(i);
      }
      assert.ok(
        o * web.cpuMs <= b + web.workers * web.cpuMs,
        `second ${k} after switchover: ${o} ops, ${fmt(b)} ms busy`,
      );
    }
    assert.ok(rel(r).first1s <= 1.05, `first1s ${rel(r).first1s} above a CPU-saturated baseline`);
  }
});

test('same scenario and seed ⇒ byte-identical JSON report, with a workload and postcopy', () => {
  const s = scenario({ vm: { vcpus: 2 }, workload: { kind: 'oltp' } });
  const a = JSON.stringify(simulate(s, { seed: 11 }));
  simulate(scenario(), { seed: 11 }); // another run in between shares nothing
  const b = JSON.stringify(simulate(s, { seed: 11 }));
  assert.equal(a, b);
  const report = JSON.parse(a) as Report;
  assert.equal(report.migrations[0].mode, 'postcopy');
  assert.ok(report.migrations[0].remoteFaults > 0);
  assert.equal(report.workloads[0].kind, 'oltp');
  assert.notEqual(JSON.stringify(simulate(s, { seed: 12 })), a, 'the seed reaches the workload');
});

test('precopy with a workload: no remote faults, and the workload’s writes come back as resent pages', () => {
  const precopy = (workload: Record<string, unknown>, seed = 1) => {
    const s = validateScenario({
      name: 'precopy',
      settleS: 3,
      hosts: [
        { name: 'src', nicMbps: NIC_MBPS },
        { name: 'dst', nicMbps: NIC_MBPS },
      ],
      vms: [{ name: 'vm', host: 'src', ramMiB: 512, vcpus: 1, workload }],
      migrations: [{ vm: 'vm', to: 'dst', atS: 2, mode: 'precopy', cooperative: true }],
    });
    const r = simulate(s, { seed });
    const m = mig(r);
    assert.equal(m.outcome, 'completed', m.reason);
    assert.equal(m.mode, 'precopy');
    assert.equal(m.remoteFaults, 0);
    assert.equal(m.asyncFaults, 0);
    assert.equal(m.syncFaults, 0);
    assert.equal(m.vcpuBlockedMs, 0);
    assert.equal(m.postcopyMs, 0);
    assert.ok(m.downtimeMs > 0);
    assert.equal(
      wl(r).vcpu.reduce((n, b) => n + b.blockedMs, 0),
      0,
    );
    return r;
  };
  const idle = precopy({ kind: 'idle' });
  const memtouch = precopy({ kind: 'memtouch', rateMBps: 20, workingSetMiB: 64 });
  const web = precopy({ kind: 'web', hotSetMiB: 128 });
  assert.equal(mig(idle).pagesSent.resent, 0, 'nothing writes in the idle VM');
  assert.ok(
    mig(memtouch).pagesSent.resent > mig(idle).pagesSent.resent,
    `resent: memtouch ${mig(memtouch).pagesSent.resent}, idle ${mig(idle).pagesSent.resent}`,
  );
  assert.ok(mig(memtouch).rounds > mig(idle).rounds);
  assert.ok(mig(web).pagesSent.resent > 0, 'the web server’s writes are resent too');
  // a heavier writer resends more
  const heavy = precopy({ kind: 'memtouch', rateMBps: 40, workingSetMiB: 64 });
  assert.ok(mig(heavy).pagesSent.resent > mig(memtouch).pagesSent.resent);
  // the guest keeps working through the migration
  for (const r of [memtouch, web]) {
    assert.ok(wl(r).baselineOpsPerSec > 0);
    assert.ok(rel(r).first1s > 0);
  }
  assert.equal(wl(idle).relativeThroughput, null, 'an idle guest has no rate to compare');
});

test('a fault wake-up time: each blocking fault stalls its vCPU for the demand plus that time', () => {
  const single = { workload: { workers: 1, connections: 1 }, migration: { cooperative: false } };
  const base = mig(run(single));
  const slow = mig(run({ ...single, vm: { faultWakeUs: 2000 } }));
  const stall = (m: MigrationReport) => m.vcpuBlockedMs / m.syncFaults;
  assert.ok(
    base.syncFaults > 100 && slow.syncFaults > 100,
    `${base.syncFaults}, ${slow.syncFaults} blocking faults`,
  );
  // the demand's own latency does not change; the vCPU waits 2 ms longer for each page
  assert.ok(Math.abs(slow.faultLatencyUs.p50 - base.faultLatencyUs.p50) <= 0.05 * base.faultLatencyUs.p50);
  const added = stall(slow) - stall(base);
  assert.ok(Math.abs(added - 2) < 0.2, `each blocking fault stalls ${added.toFixed(3)} ms longer`);
  // a slower wake-up leaves the single task fewer requests, so fewer faults in the same push
  assert.ok(slow.syncFaults < base.syncFaults, `${slow.syncFaults} vs ${base.syncFaults} faults`);
});

/** Requests the VM answered from `fromMs` to `toMs` (its 100 ms throughput bins). */
function served(r: Report, fromMs: number, toMs: number): number {
  return wl(r)
    .throughput.filter(([t]) => t >= fromMs && t < toMs)
    .reduce((n, [, perSec]) => n + perSec / 10, 0);
}

/** From the switchover to the last page, ms. */
function postcopySpan(r: Report): [number, number] {
  const m = mig(r);
  return [m.switchoverMs, m.switchoverMs + m.postcopyMs];
}

test("requests wait out the destination downlink's queue while the pages come in, and only then", () => {
  // fewer clients than workers: each request's way in counts
  const clients = { workload: { workers: 4, connections: 2 } };
  const base = run(clients);
  const queued = run({ ...clients, dst: { downlinkQueueUs: 3000 } });
  const [from, to] = postcopySpan(base);
  assert.ok(to - from > 500, `a postcopy of ${to - from} ms`);
  // on the source nothing changes: the same run up to the switchover
  assert.deepEqual(
    wl(queued).throughput.filter(([t]) => t < from),
    wl(base).throughput.filter(([t]) => t < from),
  );
  const [qFrom, qTo] = postcopySpan(queued);
  const rate = (r: Report, a: number, b: number) => served(r, a, b) / (b - a);
  assert.ok(
    rate(queued, qFrom, qTo) < 0.9 * rate(base, from, to),
    `${rate(queued, qFrom, qTo).toFixed(2)} vs ${rate(base, from, to).toFixed(2)} requests/ms in postcopy`,
  );
  // with every page in, the downlink is free again: the same rate as without the queue
  const end = Math.max(to, qTo) + 1000;
  const after = (r: Report) => rate(r, end, end + 3000);
  assert.ok(Math.abs(after(queued) / after(base) - 1) < 0.05, `${after(queued)} vs ${after(base)} after`);
});

test('a downlink queue on the source changes nothing: in precopy the pages come in on the destination', () => {
  const precopy = { workload: { workers: 4, connections: 2 }, migration: { mode: 'precopy' } };
  assert.deepEqual(run({ ...precopy, src: { downlinkQueueUs: 3000 } }), run(precopy));
});

test('dearer async faults leave a cooperative postcopy fewer requests; blocking faults do not pay them', () => {
  const clients = { workload: { workers: 8, connections: 8 } };
  const cheap = run(clients);
  const dear = run({ ...clients, vm: { asyncFaultCpuUs: 400 } });
  assert.ok(mig(cheap).asyncFaults > 100, `${mig(cheap).asyncFaults} async faults`);
  const [from, to] = postcopySpan(cheap);
  const [dFrom, dTo] = postcopySpan(dear);
  const rate = (r: Report, a: number, b: number) => served(r, a, b) / (b - a);
  assert.ok(
    rate(dear, dFrom, dTo) < rate(cheap, from, to),
    `${rate(dear, dFrom, dTo).toFixed(2)} vs ${rate(cheap, from, to).toFixed(2)} requests/ms in postcopy`,
  );
  const blocking = { ...clients, migration: { cooperative: false } };
  assert.deepEqual(run({ ...blocking, vm: { asyncFaultCpuUs: 400 } }), run(blocking));
});
