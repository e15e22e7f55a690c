// What the paper experiment's simulated twins take from the real runs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  calibrationTwin,
  clientLoop,
  closedLoopRate,
  fittedEfficiency,
  measuredRuns,
  PAPER,
  PAPER_QUICK,
  paperScenarios,
} from '../../src/cli/paper.ts';
import { percentiles } from '../../src/engine/stats.ts';
import type { TrialResult } from '../../src/lab/trial.ts';
import { simulate } from '../../src/sim/world.ts';

/** A postcopy trial as measuredRuns reads it: faults, the vCPUs' waits, one latency bucket. */
function trial(variant: string, cooperative: boolean, vcpu: Record<string, number>): TrialResult {
  return {
    migration: {
      variant,
      mode: 'postcopy',
      cooperative,
      startMs: 0,
      totalTimeMs: 2000,
      downtimeMs: 3,
      setupMs: 500,
      // every demand took between 2 and 4 ms: the mean is taken at ¾ of the bucket's bound
      faultLatencyHistogram: [[4096, 100]],
      asyncFaults: 0,
      syncFaults: 0,
      vcpuBlockedMs: 0,
      vcpuParkedMs: 0,
      vcpuRunMs: 100,
      vcpuWaitMs: 250,
      ...vcpu,
    },
    workload: { kind: 'kv', throughput: [] },
    report: { workloads: [] },
    dip: { baselineOpsPerSec: 10_000 },
    memory: { pages: 65_536, zeroPages: 40_000 },
  } as unknown as TrialResult;
}

test('each twin takes its fault wake-up from its own run: blocked or parked time per fault, less the latency', () => {
  const m = measuredRuns([
    trial('kv-postcopy-blocking', false, { syncFaults: 100, vcpuBlockedMs: 500 }),
    trial('kv-postcopy-cooperative', true, {
      asyncFaults: 200,
      vcpuParkedMs: 1400,
      syncFaults: 3,
      vcpuBlockedMs: 90,
    }),
    trial('kv-postcopy-idle', true, {}),
  ]);
  const mean = 4096 * 0.75;
  assert.equal(m.get('kv-postcopy-blocking')!.faultWakeUs, 5000 - mean);
  assert.equal(m.get('kv-postcopy-cooperative')!.faultWakeUs, 7000 - mean);
  assert.equal(m.get('kv-postcopy-idle')!.faultWakeUs, 0, 'no fault, no wake-up');
  // the vCPU threads' wait per ms on a core is the twin's host contention
  assert.equal(m.get('kv-postcopy-blocking')!.hostContention, 2.5);
});

test('a postcopy twin takes the destination main thread’s busy share of the postcopy; precopy none', () => {
  // switched over 500 ms into the run, 3 ms down: 1497 ms of postcopy, 599 ms of it on a core
  const post = trial('kv-postcopy-cooperative', true, { switchoverMs: 500, hostRunMs: 598.8 });
  const pre = trial('kv-precopy', false, { switchoverMs: 1900, hostRunMs: 100 });
  (pre.migration as { mode: string }).mode = 'precopy';
  const m = measuredRuns([post, pre]);
  assert.ok(Math.abs(m.get('kv-postcopy-cooperative')!.hostBusy - 0.4) < 1e-9);
  assert.equal(m.get('kv-precopy')!.hostBusy, 0);
  // a report from before the measure: no share, the path slowed by contention alone
  const old = trial('kv-postcopy-blocking', false, { switchoverMs: 500 });
  assert.equal(measuredRuns([old]).get('kv-postcopy-blocking')!.hostBusy, 0);
});

test('a twin takes the measured mean latency when the report has one, the histogram otherwise', () => {
  const t = trial('kv-postcopy-blocking', false, { syncFaults: 100, vcpuBlockedMs: 500 });
  (t.migration as { faultLatencyUs?: unknown }).faultLatencyUs = {
    p50: 900,
    p90: 2000,
    p99: 3000,
    max: 4000,
    mean: 1234,
  };
  const m = measuredRuns([t]).get('kv-postcopy-blocking')!;
  assert.equal(m.faultLatencyUs, 1234);
  assert.equal(m.faultWakeUs, 5000 - 1234);
});

test('percentiles carry the mean: the sum over the count, zeros for nothing', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 1e6 }), { minLength: 1, maxLength: 200 }), (xs) => {
      const p = percentiles([...xs]);
      const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
      assert.ok(Math.abs(p.mean - mean) < 1e-6);
      assert.ok(p.mean <= p.max && p.mean >= Math.min(...xs));
    }),
  );
  assert.deepEqual(percentiles([]), { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 });
});

test('the twin serves what the real app served: one handler at a time, whatever the vCPUs', () => {
  const m = measuredRuns([trial('kv-postcopy-cooperative', true, { asyncFaults: 10, vcpuParkedMs: 50 })]);
  const s = paperScenarios(PAPER, m, { efficiency: 0.8 }).find(
    (x) => x.name === 'kv-postcopy-cooperative',
  )!.scenario;
  const vm = s.vms[0];
  assert.ok(PAPER.vcpus > 1, 'the experiment gives the VM more than one vCPU');
  assert.equal((vm.workload as { cpuMs: number }).cpuMs, 1000 / 10_000);
  assert.equal(vm.faultWakeUs, m.get('kv-postcopy-cooperative')!.faultWakeUs);
  assert.equal(s.network.efficiency, 0.8);
});

test('closed loop: one client alternates path and service; many saturate the server', () => {
  assert.equal(closedLoopRate(1, 2, 8), 100);
  assert.ok(Math.abs(closedLoopRate(200, 2, 8) - 500) < 1e-6);
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 64 }),
      fc.double({ min: 0.01, max: 5, noNaN: true }),
      fc.double({ min: 0, max: 50, noNaN: true }),
      (n, cpuMs, pathMs) => {
        const rate = closedLoopRate(n, cpuMs, pathMs);
        assert.ok(rate <= 1000 / cpuMs + 1e-9, 'no faster than the server');
        assert.ok(rate <= (n * 1000) / (pathMs + cpuMs) + 1e-9, 'no faster than the clients');
        assert.ok(closedLoopRate(n, cpuMs, pathMs + 1) <= rate + 1e-9, 'a longer path, fewer requests');
      },
    ),
  );
});

test("the twin's requests spend outside the guest what the measured rate leaves, so the loop gives the measured rate", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 64 }),
      fc.double({ min: 0.01, max: 2, noNaN: true }),
      fc.double({ min: 0.05, max: 1, noNaN: true }),
      (n, cpuMs, load) => {
        // the guest busy `load` of the time at the measured rate
        const rate = (load * 1000) / cpuMs;
        const loop = clientLoop(n, { baselineOpsPerSec: rate, cpuMsPerRequest: cpuMs } as never);
        assert.equal(loop.cpuMs, cpuMs);
        assert.ok(Math.abs(closedLoopRate(n, loop.cpuMs, loop.pathMs) / rate - 1) < 1e-3);
      },
    ),
  );
  // more CPU per request than the rate leaves room for (the vCPUs' own work beside the
  // handlers): a saturated server, no request path
  assert.deepEqual(clientLoop(16, { baselineOpsPerSec: 1000, cpuMsPerRequest: 3 } as never), {
    cpuMs: 1,
    pathMs: 0,
  });
  assert.deepEqual(clientLoop(16, undefined), { cpuMs: 0.1, pathMs: 0 });
});

test('a twin whose guest was busy 40% of the time serves the measured rate in the simulator', () => {
  const t = trial('kv-postcopy-cooperative', true, { asyncFaults: 10, vcpuParkedMs: 50 });
  // 4,000 requests a second, 0.1 ms of guest CPU each
  (t.dip as { baselineOpsPerSec: number }).baselineOpsPerSec = 4000;
  Object.assign(t.memory, { vcpuRunMs: 400, requests: 4000, sampleMs: 1000 });
  const m = measuredRuns([t]);
  assert.ok(Math.abs(m.get('kv-postcopy-cooperative')!.cpuMsPerRequest - 0.1) < 1e-12);
  const s = paperScenarios(PAPER, m, { efficiency: 0.8 }).find(
    (x) => x.name === 'kv-postcopy-cooperative',
  )!.scenario;
  const w = s.vms[0].workload as { cpuMs: number; pathMs: number };
  assert.ok(w.pathMs > 2, `request path ${w.pathMs} ms`);
  const r = simulate(s, { seed: 3 });
  const before = r.workloads[0].throughput.filter(([tMs]) => tMs >= 1000 && tMs < 3500);
  const rate = before.reduce((x, [, v]) => x + v, 0) / before.length;
  assert.ok(Math.abs(rate / 4000 - 1) < 0.1, `simulated ${rate.toFixed(0)} requests/s before the migration`);
});

test('on loopback the twin caps only the migration, as the real source does: replies share no link with it', () => {
  const [shaped] = paperScenarios(PAPER, new Map(), { efficiency: 0.9 });
  assert.equal(shaped.scenario.hosts[0].nicMbps, PAPER.linkMbps);
  assert.equal(shaped.scenario.migrations[0].maxBandwidthMbps, undefined);
  assert.equal(shaped.scenario.network.efficiency, 0.9);
  const [loop] = paperScenarios(PAPER, new Map(), { efficiency: 0.9, loopback: true });
  assert.ok(loop.scenario.hosts.every((h) => h.nicMbps >= 10 * PAPER.linkMbps));
  assert.equal(loop.scenario.migrations[0].maxBandwidthMbps, 0.9 * PAPER.linkMbps);
});

test("the link's efficiency is the one with which the calibration's twin takes the measured time", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 40, max: 95 }),
      fc.integer({ min: 0, max: 800 }),
      fc.boolean(),
      (percent, setupMs, loopback) => {
        const truth = percent / 100;
        const cal = { dataMiB: PAPER_QUICK.fillMiB, setupMs, totalMs: 0 };
        const m = simulate(calibrationTwin(PAPER_QUICK, cal, truth, loopback), { seed: 1 }).migrations[0];
        cal.totalMs = m.totalTimeMs;
        const fitted = fittedEfficiency(PAPER_QUICK, cal, loopback);
        assert.ok(Math.abs(fitted - truth) < 0.01, `fitted ${fitted}, true ${truth}`);
        // the bytes over the time after the set-up count the fixed costs in every page: lower
        const raw = (m.bytesSent * 8) / ((m.totalTimeMs - setupMs) / 1000) / 1e6 / PAPER_QUICK.linkMbps;
        assert.ok(raw < truth, `raw rate ${raw} below the efficiency ${truth}`);
      },
    ),
    { numRuns: 12 },
  );
});

test('a calibration faster than any link gives an efficiency of 1, a slower one the floor', () => {
  const cal = { dataMiB: PAPER_QUICK.fillMiB, setupMs: 100 };
  assert.equal(fittedEfficiency(PAPER_QUICK, { ...cal, totalMs: 101 }), 1);
  assert.equal(fittedEfficiency(PAPER_QUICK, { ...cal, totalMs: 3_600_000 }), 0.05);
});

test('a twin is slowed by how much more its vCPUs waited for a core in the postcopy than before it', () => {
  // before: 0.1 ms on a core per request, and as long again waiting for one
  const slower = trial('kv-postcopy-cooperative', true, { asyncFaults: 10, vcpuParkedMs: 50 });
  Object.assign(slower.memory, { vcpuRunMs: 400, vcpuWaitMs: 400, requests: 4000, sampleMs: 1000 });
  (slower.dip as { baselineOpsPerSec: number }).baselineOpsPerSec = 4000;
  // in the postcopy 2.5 ms waiting per ms on a core (the trial's defaults)
  const m = measuredRuns([slower]).get('kv-postcopy-cooperative')!;
  assert.equal(m.baselineContention, 1);
  assert.equal(m.hostContention, 2.5);
  const twin = (x: typeof m) =>
    paperScenarios(PAPER, new Map([['kv-postcopy-cooperative', x]]), {}).find(
      (v) => v.name === 'kv-postcopy-cooperative',
    )!.scenario.vms[0];
  const vm = twin(m);
  assert.equal(vm.hostContention, 3.5 / 2 - 1);
  // the twin's server takes the vCPU's time per request with its wait for a core
  assert.ok(Math.abs((vm.workload as { cpuMs: number }).cpuMs - 0.2) < 1e-12);
  // a postcopy that waited less than before does not speed the twin up
  assert.equal(twin({ ...m, hostContention: 0.5 }).hostContention, 0);
  // precopy's contention is the app's slowdown against before it: the twin takes it as is
  const precopy = paperScenarios(PAPER, new Map([['kv-precopy', { ...m, hostContention: 0.5 }]]), {}).find(
    (v) => v.name === 'kv-precopy',
  )!.scenario.vms[0];
  assert.equal(precopy.hostContention, 0.5);
});

test("a cooperative twin's async faults cost its vCPU what the real ones did beyond the requests' work", () => {
  const t = trial('kv-postcopy-cooperative', true, { asyncFaults: 200, switchoverMs: 0, vcpuRunMs: 300 });
  Object.assign(t.memory, { vcpuRunMs: 400, vcpuWaitMs: 0, requests: 4000, sampleMs: 1000 });
  // 1,000 requests answered in the postcopy at 0.1 ms each: 100 of its 300 ms on a core
  (t as { report: unknown }).report = {
    workloads: [{ variant: 'kv-postcopy-cooperative', throughput: [[0, 10_000]] }],
  };
  const m = measuredRuns([t]).get('kv-postcopy-cooperative')!;
  assert.ok(Math.abs(m.asyncFaultCpuUs - 1000) < 1e-9, `${m.asyncFaultCpuUs} µs per fault`);
  const vm = paperScenarios(PAPER, new Map([['kv-postcopy-cooperative', m]]), {}).find(
    (v) => v.name === 'kv-postcopy-cooperative',
  )!.scenario.vms[0];
  assert.equal(vm.asyncFaultCpuUs, 1000);
  const blocking = trial('kv-postcopy-blocking', false, { syncFaults: 200, switchoverMs: 0, vcpuRunMs: 300 });
  assert.equal(measuredRuns([blocking]).get('kv-postcopy-blocking')!.asyncFaultCpuUs, 0);
});

test("the destination's measured downlink queue goes to the twin's destination host, not on loopback", () => {
  const t = trial('kv-postcopy-cooperative', true, { asyncFaults: 10, vcpuParkedMs: 50 });
  (t as { downlinkQueueUs?: number }).downlinkQueueUs = 1800;
  const m = measuredRuns([t]);
  const hosts = (link: object) =>
    paperScenarios(PAPER, m, link).find((v) => v.name === 'kv-postcopy-cooperative')!.scenario.hosts;
  const [a, b] = hosts({});
  assert.equal(b.downlinkQueueUs, 1800);
  assert.equal(a.downlinkQueueUs, 0);
  assert.ok(hosts({ loopback: true }).every((h) => h.downlinkQueueUs === 0));
});

test("a postcopy twin's clients' way through the hosts slows as much as the measured one did", () => {
  const t = trial('kv-postcopy-cooperative', true, { asyncFaults: 10, vcpuParkedMs: 50 });
  // before: 0.6 ms of the cycle outside the guest, 0.2 ms of its time in it crossing threads
  // (0.8 ms in all); in the postcopy 4 ms outside, 1.5 of them in the downlink's queue (the
  // twin's host carries that), and 0.6 ms crossing threads: 3.1 ms
  (t as { downlinkQueueUs?: number }).downlinkQueueUs = 1500;
  (t as { requestTimes: unknown }).requestTimes = {
    baseline: { requests: 9000, cycleMs: 1, guestMs: 0.4, hopMs: 0.2 },
    postcopy: { requests: 900, cycleMs: 8, guestMs: 4, hopMs: 0.6 },
  };
  const m = measuredRuns([t]).get('kv-postcopy-cooperative')!;
  assert.ok(Math.abs(m.pathSlowdown! - 3.1 / 0.8) < 1e-9, `${m.pathSlowdown}`);
  const twin = (x: typeof m, run = 'kv-postcopy-cooperative') =>
    paperScenarios(PAPER, new Map([[run, x]]), {}).find((v) => v.name === run)!.scenario.vms[0];
  const vm = twin({ ...m, hostBusy: 0.3 });
  assert.ok(Math.abs(vm.pathContention! - (3.1 / 0.8 - 1)) < 1e-9);
  // the measured slowdown stands for the busy share and the contention on the path
  assert.equal(vm.hostBusy, 0);
  // without the measure (a report from before it), the busy share as before
  const unmeasured = twin({ ...m, pathSlowdown: 0, hostBusy: 0.3 });
  assert.equal(unmeasured.pathContention, undefined);
  assert.equal(unmeasured.hostBusy, 0.3);
  delete (t as { requestTimes?: unknown }).requestTimes;
  assert.equal(measuredRuns([t]).get('kv-postcopy-cooperative')!.pathSlowdown, 0);
  // precopy's path slows with its measured contention
  assert.equal(twin(m, 'kv-precopy').pathContention, undefined);
});
