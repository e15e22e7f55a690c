// The report schema shared by the simulated and the real world, so runs of the same
// scenario can be laid side by side.

import type { MigrationMode } from '../engine/config.ts';
import type { Outcome, PagesByKind, Percentiles } from '../engine/stats.ts';

export interface MigrationReport {
  vm: string;
  variant: string;
  mode: MigrationMode;
  /** Guest-cooperative (async) page faults during postcopy, or blocking ones. */
  cooperative: boolean;
  source: string;
  destination: string;
  outcome: Outcome;
  /** Why it ended the way it did. */
  reason: string;
  startMs: number;
  totalTimeMs: number;
  /** When the guest stopped on the source (switchover), ms since the run began; -1 if never. */
  switchoverMs: number;
  /** Guest's last instruction on the source to its first on the destination. */
  downtimeMs: number;
  bytesSent: number;
  pagesSent: PagesByKind;
  rounds: number;
  /** Pages sent in each precopy round. */
  roundPages: number[];
  /** When each precopy round ended, ms after the migration started. */
  roundEndMs: number[];
  remoteFaults: number;
  /** Demanded pages sent a second time, urgently, because their first copy was still queued. */
  demandResends: number;
  /** Remote faults the guest took as async (not-present / ready) and as blocking faults. */
  asyncFaults: number;
  syncFaults: number;
  /** vCPU time spent stalled on remote faults, summed over vCPUs. */
  vcpuBlockedMs: number;
  faultLatencyUs: Percentiles;
  /** Length of the postcopy phase (switchover to last page), 0 without postcopy. */
  postcopyMs: number;
  /** Sampled every 100 ms: [tMs, pages not yet on the destination]. */
  missingPages: [number, number][];
  /** Remote-fault latency distribution: [upper bound µs (powers of 2), count] per bucket. */
  faultLatencyHistogram: [number, number][];
}

/** vCPU time split per 100 ms bin, summed over the VM's vCPUs (ms). */
export interface VcpuBin {
  tMs: number;
  busyMs: number;
  haltedMs: number;
  blockedMs: number;
}

export interface WorkloadReport {
  vm: string;
  variant: string;
  /** web | oltp | memtouch | idle */
  kind: string;
  vcpus: number;
  /** The migration's mode and fault handling, when the VM migrated. */
  mode: MigrationMode | 'none';
  cooperative: boolean;
  /** Completed operations per second, per 100 ms bin: [tMs, opsPerSec]. */
  throughput: [number, number][];
  /** Latency of operations completed in each 100 ms bin: [tMs, p50Ms, p99Ms]. */
  latencyMs: [number, number, number][];
  /**
   * Throughput in the first 1, 5 and 10 s after switchover as a fraction of the rate before
   * the migration started (null when there was no switchover).
   */
  relativeThroughput: { first1s: number; first5s: number; first10s: number } | null;
  /** Rate before the migration began, ops/s. */
  baselineOpsPerSec: number;
  vcpu: VcpuBin[];
}

export interface Report {
  scenario: string;
  seed: number;
  world: 'sim' | 'real';
  migrations: MigrationReport[];
  workloads: WorkloadReport[];
}
