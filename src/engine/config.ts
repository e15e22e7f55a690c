// Migration parameters shared by every driver. Times are milliseconds, rates bytes/s.

export type MigrationMode = 'precopy' | 'postcopy' | 'hybrid';

/** What precopy does when none of its stop rules can be met. */
export type OnNoConvergence = 'abort' | 'force' | 'postcopy';

export interface StopRules {
  /** QEMU's rule: stop when remaining ≤ measured bandwidth × this limit. */
  downtimeLimitMs: number;
  /** Give up after this many rounds (0 = no limit). */
  maxRounds: number;
  /** Give up after sending this many times the guest RAM (0 = no limit). */
  maxBytesFactor: number;
  /** Give up this long after the start (0 = no limit). */
  deadlineMs: number;
  onNoConvergence: OnNoConvergence;
}

export interface PostcopyOptions {
  /** Pages prepaged after each faulted page (forward) and before it (backward). */
  prepageForward: number;
  prepageBackward: number;
  /** Demand pages travel on their own lane, ahead of the background push. */
  urgentLane: boolean;
  /** The background scan continues right after the last requested page. */
  jumpToFault: boolean;
  /** A demanded page already sent on the bulk lane is sent again on the urgent lane. */
  resendInFlight: boolean;
}

export interface HybridOptions {
  /** Precopy rounds before postcopy; 0 = until the dirty set stops shrinking. */
  rounds: number;
}

export interface MigrationConfig {
  mode: MigrationMode;
  stop: StopRules;
  postcopy: PostcopyOptions;
  hybrid: HybridOptions;
  /** Size of the device (vCPU, devices) state sent at switchover. */
  deviceStateBytes: number;
}

export const DEFAULT_CONFIG: MigrationConfig = {
  mode: 'precopy',
  stop: { downtimeLimitMs: 300, maxRounds: 0, maxBytesFactor: 0, deadlineMs: 0, onNoConvergence: 'abort' },
  postcopy: {
    prepageForward: 0,
    prepageBackward: 0,
    urgentLane: true,
    jumpToFault: true,
    resendInFlight: true,
  },
  hybrid: { rounds: 0 },
  deviceStateBytes: 256 * 1024,
};

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export function migrationConfig(over: DeepPartial<MigrationConfig> = {}): MigrationConfig {
  const d = DEFAULT_CONFIG;
  return {
    mode: over.mode ?? d.mode,
    stop: { ...d.stop, ...over.stop },
    postcopy: { ...d.postcopy, ...over.postcopy },
    hybrid: { ...d.hybrid, ...over.hybrid },
    deviceStateBytes: over.deviceStateBytes ?? d.deviceStateBytes,
  };
}

/** Bytes on the wire for a page record beyond its contents (address and flags). */
export const PAGE_HEADER_BYTES = 8;

/** Bytes a batch of pages occupies on the wire (zero pages travel as bare records). */
export function batchBytes(pageCount: number, zeroCount: number): number {
  return (pageCount - zeroCount) * 4096 + pageCount * PAGE_HEADER_BYTES + 16;
}
