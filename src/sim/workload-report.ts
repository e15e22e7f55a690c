// Turns a guest runtime's counters into the report's workload entry: throughput and
// latency per 100 ms, vCPU time, and the throughput after switchover relative to before.

import type { MigrationReport, WorkloadReport } from '../report/schema.ts';
import type { SimVm } from './vm.ts';

const BIN_MS = 100;

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** Mean ops/s over [from, to) ms. */
function rate(ops: number[], from: number, to: number): number {
  const a = Math.max(0, Math.floor(from / BIN_MS));
  const b = Math.floor(to / BIN_MS);
  if (b <= a) return 0;
  let n = 0;
  for (let i = a; i < b; i++) n += ops[i] ?? 0;
  return n / (((b - a) * BIN_MS) / 1000);
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
  let baseline = 0;
  let relative: WorkloadReport['relativeThroughput'] = null;
  if (migration && migration.startMs > 0) {
    // the second before start-up settles is left out of the baseline
    baseline = rate(rt.opsPerBin, Math.max(1000, migration.startMs - 5000), migration.startMs);
    const sw = migration.switchoverMs;
    if (sw >= 0 && baseline > 0) {
      const rel = (s: number) => round3(rate(rt.opsPerBin, sw, Math.min(endMs, sw + s * 1000)) / baseline);
      relative = { first1s: rel(1), first5s: rel(5), first10s: rel(10) };
    }
  }
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

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
