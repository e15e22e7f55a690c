// The simulated guest's memory: which pages are in use (the rest are zero pages) and
// which get written when. Writes are modelled as cursors sweeping regions, so a dirty
// log sync adds a handful of page ranges however large the guest: a hot set at the start
// of RAM rewritten every period (all at once, or as a continuous sweep) and a colder
// sweep over the rest of the working set. Contents are not simulated.

import type { PageSet } from '../engine/page-set.ts';
import type { DirtyLog, GuestMemory } from '../engine/source.ts';
import type { VmSpec } from './scenario.ts';

const MiB_PAGES = 256; // 4 KiB pages per MiB
const MB = 1e6;

export class SimGuestMemory implements GuestMemory {
  readonly pageCount: number;
  readonly usedPages: number;

  constructor(vm: VmSpec) {
    this.pageCount = Math.round(vm.ramMiB * MiB_PAGES);
    this.usedPages = Math.min(this.pageCount, Math.round((vm.usedMiB ?? vm.ramMiB) * MiB_PAGES));
  }

  zeroPagesIn(start: number, count: number): number {
    const end = start + count;
    return Math.max(0, end - Math.max(start, this.usedPages));
  }
}

/** A region [start, end) written by a cursor moving at `rate` pages per ms. */
class Sweep {
  private pos = 0;
  constructor(
    readonly start: number,
    readonly end: number,
    readonly rate: number,
  ) {}

  advance(ms: number, into: PageSet): void {
    const size = this.end - this.start;
    if (size <= 0 || this.rate <= 0 || ms <= 0) return;
    const dist = this.rate * ms;
    if (dist >= size) {
      into.addRange(this.start, this.end);
      this.pos = (this.pos + dist) % size;
      return;
    }
    const from = this.pos;
    const to = from + dist;
    const a = Math.floor(from);
    const b = Math.floor(to);
    if (to <= size) into.addRange(this.start + a, this.start + Math.min(size, b + 1));
    else {
      into.addRange(this.start + a, this.end);
      into.addRange(this.start, this.start + Math.floor(to - size) + 1);
    }
    this.pos = to % size;
  }
}

export class SimDirtyLog implements DirtyLog {
  private last: number;
  private readonly hot: Sweep | undefined;
  private readonly cold: Sweep;
  private readonly hotPages: number;
  private readonly periodMs: number;
  private readonly burst: boolean;
  private readonly once: boolean;
  private nextBurst: number;
  /** Pages added to the log since the run began (for reports and tests). */
  written = 0;
  /** Pages the guest's workload wrote since the last sync, merged in at each sync. */
  extra: PageSet | undefined;

  /**
   * `rng` gives burst times: bursts arrive at random, on average once per period (a
   * Poisson process: the writers are independent tasks), so they never lock in phase
   * with the migration's rounds.
   */
  constructor(
    vm: VmSpec,
    memory: SimGuestMemory,
    now: number,
    private readonly rng: () => number,
  ) {
    const d = vm.dirty;
    const ws = Math.min(
      memory.usedPages,
      Math.round((d.workingSetMiB ?? Number.POSITIVE_INFINITY) * MiB_PAGES),
    );
    this.hotPages = Math.min(ws, Math.round(d.hotSetMiB * MiB_PAGES));
    this.periodMs = d.hotPeriodS * 1000;
    this.burst = d.hotPattern === 'burst';
    this.once = d.hotPattern === 'once';
    this.nextBurst = now + (this.once ? rng() * this.periodMs : this.interval());
    if (d.hotPattern === 'sweep' && this.hotPages > 0)
      this.hot = new Sweep(0, this.hotPages, this.hotPages / this.periodMs);
    const coldPagesPerMs = (d.rateMBps * MB) / 4096 / 1000;
    this.cold = new Sweep(this.hotPages, ws, coldPagesPerMs);
    this.last = now;
  }

  private interval(): number {
    return -Math.log(1 - this.rng()) * this.periodMs;
  }

  sync(now: number, into: PageSet): void {
    const dt = now - this.last;
    const before = into.size;
    if (this.burst || this.once) {
      if (this.nextBurst <= now && this.hotPages > 0) into.addRange(0, this.hotPages);
      while (this.nextBurst <= now)
        this.nextBurst = this.once ? Number.POSITIVE_INFINITY : this.nextBurst + this.interval();
    } else this.hot?.advance(dt, into);
    this.cold.advance(dt, into);
    if (this.extra && this.extra.size > 0) {
      into.addAll(this.extra);
      this.extra.clear();
    }
    this.written += into.size - before;
    this.last = now;
  }
}
