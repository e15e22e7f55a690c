// The report schema shared by the simulated and the real world, so runs of the same
// scenario can be laid side by side.

import type { MigrationMode } from '../engine/config.ts';
import type { Outcome, PagesByKind, Percentiles } from '../engine/stats.ts';

export interface MigrationReport {
  vm: string;
  variant: string;
  mode: MigrationMode;
  source: string;
  destination: string;
  outcome: Outcome;
  /** Why it ended the way it did. */
  reason: string;
  startMs: number;
  totalTimeMs: number;
  /** Guest's last instruction on the source to its first on the destination. */
  downtimeMs: number;
  bytesSent: number;
  pagesSent: PagesByKind;
  rounds: number;
  /** Pages sent in each precopy round. */
  roundPages: number[];
  remoteFaults: number;
  faultLatencyUs: Percentiles;
  /** Length of the postcopy phase (switchover to last page), 0 without postcopy. */
  postcopyMs: number;
}

export interface Report {
  scenario: string;
  seed: number;
  world: 'sim' | 'real';
  migrations: MigrationReport[];
}
