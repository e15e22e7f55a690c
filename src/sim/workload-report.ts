// Turns a guest runtime's counters into the report's workload entry: throughput and
// latency per 100 ms, vCPU time, and the throughput after switchover relative to before.

import type { MigrationReport, WorkloadReport } from '../report/schema.ts';
import { aroundSwitchover, BIN_MS, round3 } from '../report/throughput.ts';
import type { SimVm } from './vm.ts';

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

export function workloadReport(
  vm: SimVm,
  migration: MigrationReport | undefined,
  variant: string,
  endMs: number,
): WorkloadReport {
  const rt = vm.runtime!;
  const bins = Math.ceil(endMs / BIN_MS);
  const throughput: [number, number][] = [];
  const latencyMs: [number, number, number][] = [];
  for (let i = 0; i < bins; i++) {
    throughput.push([i * BIN_MS, (rt.opsPerBin[i] ?? 0) * (1000 / BIN_MS)]);
    const lat = [...(rt.latencyPerBin[i] ?? [])].sort((a, b) => a - b);
    latencyMs.push([i * BIN_MS, round3(quantile(lat, 0.5)), round3(quantile(lat, 0.99))]);
  }
  const { baseline, relative } = migration
    ? aroundSwitchover(rt.opsPerBin, migration.startMs, migration.switchoverMs, endMs)
    : { baseline: 0, relative: null };
  return {
    vm: vm.spec.name,
    variant: variant || migration?.variant || '',
    kind: rt.model.kind,
    vcpus: vm.spec.vcpus,
    mode: migration?.mode ?? 'none',
    cooperative: migration?.cooperative ?? false,
    throughput,
    latencyMs,
    relativeThroughput: relative,
    baselineOpsPerSec: round3(baseline),
    vcpu: rt.vcpuBins.map((b) => ({
      tMs: b.tMs,
      busyMs: round3(b.busyMs),
      haltedMs: round3(b.haltedMs),
      blockedMs: round3(b.blockedMs),
    })),
  };
}
