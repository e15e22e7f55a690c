// What the paper experiment's simulated twins take from the real runs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { measuredRuns, PAPER, paperScenarios } from '../../src/cli/paper.ts';
import type { TrialResult } from '../../src/lab/trial.ts';

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

test('the twin serves what the real app served: one handler at a time, whatever the vCPUs', () => {
  const m = measuredRuns([trial('kv-postcopy-cooperative', true, { asyncFaults: 10, vcpuParkedMs: 50 })]);
  const s = paperScenarios(PAPER, m, 0.8).find((x) => x.name === 'kv-postcopy-cooperative')!.scenario;
  const vm = s.vms[0];
  assert.ok(PAPER.vcpus > 1, 'the experiment gives the VM more than one vCPU');
  assert.equal((vm.workload as { cpuMs: number }).cpuMs, 1000 / 10_000);
  assert.equal(vm.faultWakeUs, m.get('kv-postcopy-cooperative')!.faultWakeUs);
  assert.equal(s.network.efficiency, 0.8);
});
