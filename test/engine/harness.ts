// An in-memory driver for the engine: a MigrationSource and a MigrationDestination joined
// by FIFO lanes (control, bulk and urgent towards the destination, one lane back), a
// model guest whose pages carry version numbers instead of contents, and a scheduler
// that interleaves deliveries, guest activity and virtual time from a seeded random
// sequence (seeded from the property's input). Each lane stays FIFO; the order between
// lanes is random. The source hands out messages only for 'bulk' and 'urgent': control
// messages (roundEnd, switchover, complete, abort) ride the bulk lane behind the pages
// sent before them, so the control lane stays empty and is only probed.
//
// The harness records what crossed the link and checks, as it goes, the facts that can
// only be seen at the moment they happen (stale pages at the switchover, demands for
// pages already in flight, installs over present pages). Those land in `violations`;
// the end state (RAM contents, counters, events) is returned for the caller to check.

import { batchBytes, type MigrationConfig } from '../../src/engine/config.ts';
import { type DestinationEvent, MigrationDestination } from '../../src/engine/destination.ts';
import type {
  DestinationMessage,
  Lane,
  PageBatch,
  PageKind,
  SourceMessage,
} from '../../src/engine/messages.ts';
import type { PageSet } from '../../src/engine/page-set.ts';
import {
  type DirtyLog,
  type GuestMemory,
  MigrationSource,
  type SourceEvent,
} from '../../src/engine/source.ts';
import type { Outcome } from '../../src/engine/stats.ts';

// ---------------------------------------------------------------------------------------
// Randomness

export interface Random {
  /** Integer in [0, n). */
  int(n: number): number;
  /** Float in [0, 1). */
  float(): number;
}

/** mulberry32: small, fast, and good enough to pick interleavings. */
export function seededRandom(seed: number): Random {
  let a = seed >>> 0;
  const float = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { float, int: (n) => Math.floor(float() * n) };
}

// ---------------------------------------------------------------------------------------
// Scenario

/** Which pages the guest touches. */
export type AccessPattern =
  | { kind: 'random' }
  /** A cursor walking [from, from + length) and wrapping. */
  | { kind: 'sequential'; from: number; length: number }
  /** Mostly the `pages` listed; `coldPercent` of touches anywhere. */
  | { kind: 'hot'; pages: number[]; coldPercent: number };

export interface GuestWorkload {
  pattern: AccessPattern;
  /** Most pages touched per guest step (the step picks 0 … this many). */
  touchesPerStep: number;
  /** Share of touches that write, in percent (on the source every touch that matters writes). */
  writePercent: number;
  /** Guest steps until the workload goes quiet; 0 = it never does. */
  steps: number;
  /** Writes made before the migration starts (the dirty log records them). */
  preStartWrites: number;
  /** Pages the guest touches first once it runs on the destination, in order. */
  faultSequence: number[];
  /** Touches that may wait for a page at once on the destination (1 = a blocking fault). */
  maxWaiting: number;
}

/** How often each kind of action is picked, relative to the others, when it is possible. */
export interface Weights {
  pull: number;
  control: number;
  bulk: number;
  urgent: number;
  back: number;
  guest: number;
}

export interface Scenario {
  pageCount: number;
  /** Share of pages that start as zero pages, in percent. */
  zeroPercent: number;
  config: MigrationConfig;
  /** Byte budget the driver offers `next()` for one message. */
  budgetBytes: number;
  /** Messages a source→destination lane holds before the driver stops pulling for it. */
  laneDepth: number;
  weights: Weights;
  /** Virtual time advances by a uniform step in [0, maxStepMs) per action. */
  maxStepMs: number;
  /** Tell the source `idle()` whenever every outgoing lane drained. */
  idleWhenDrained: boolean;
  workload: GuestWorkload;
  /** Seed of the interleaving and of the guest's choices. */
  seed: number;
  /** Actions before the run is declared hung. */
  maxSteps: number;
}

// ---------------------------------------------------------------------------------------
// Model guest memory

/** Guest RAM as page versions, with a zero-page set and a dirty log. */
export class ModelMemory implements GuestMemory, DirtyLog {
  readonly pageCount: number;
  /** Version of each page on the source. */
  readonly versions: Int32Array;
  private readonly zero: Uint8Array;
  private readonly dirty: Uint8Array;
  private dirtyList: number[] = [];
  readonly syncs: number[] = [];

  constructor(pageCount: number, zeroPages: Iterable<number>) {
    this.pageCount = pageCount;
    this.versions = new Int32Array(pageCount);
    this.zero = new Uint8Array(pageCount);
    this.dirty = new Uint8Array(pageCount);
    for (const p of zeroPages) this.zero[p] = 1;
  }

  isZero(pfn: number): boolean {
    return this.zero[pfn] === 1;
  }

  zeroPagesIn(start: number, count: number): number {
    let n = 0;
    for (let p = start; p < start + count; p++) n += this.zero[p];
    return n;
  }

  /** The guest wrote `pfn` on the source: it gets `version` and is no longer a zero page. */
  write(pfn: number, version: number): void {
    this.versions[pfn] = version;
    this.zero[pfn] = 0;
    if (this.dirty[pfn] === 0) {
      this.dirty[pfn] = 1;
      this.dirtyList.push(pfn);
    }
  }

  sync(now: number, into: PageSet): void {
    this.syncs.push(now);
    for (const p of this.dirtyList) {
      into.add(p);
      this.dirty[p] = 0;
    }
    this.dirtyList = [];
  }
}

/** Picks the pages a guest step touches. */
class Accessor {
  private cursor: number;

  constructor(
    private readonly pattern: AccessPattern,
    private readonly pageCount: number,
    private readonly rng: Random,
  ) {
    this.cursor = pattern.kind === 'sequential' ? 0 : -1;
  }

  nextPage(): number {
    const p = this.pattern;
    const n = this.pageCount;
    if (p.kind === 'sequential') {
      const len = Math.max(1, Math.min(p.length, n));
      const pfn = (p.from + (this.cursor % len)) % n;
      this.cursor++;
      return pfn;
    }
    if (p.kind === 'hot' && p.pages.length > 0 && this.rng.int(100) >= p.coldPercent)
      return p.pages[this.rng.int(p.pages.length)] % n;
    return this.rng.int(n);
  }
}

// ---------------------------------------------------------------------------------------
// Run record

export interface At {
  /** Action number. */
  step: number;
  at: number;
}

/** Harness-level checks, by the invariant they belong to. */
export interface Violations {
  /** A page written after it was sent is neither resent nor discarded by the switchover. */
  stale: string[];
  /** A pfn demanded while present or while a demand for it was in flight; a fault answer that disagrees. */
  demand: string[];
  /** An install over a page present after the switchover, or outside the batch that carried it. */
  overwrite: string[];
  /** Demand pages carried on the bulk lane although the urgent lane is on. */
  lanes: string[];
  /** Malformed batches, or `hasWork`/`next` disagreeing. */
  wire: string[];
}

export interface Handed {
  pages: number;
  zeroPages: number;
  batchBytes: number;
  /** Pages by batch kind, with the zero pages among them. */
  byKind: Record<PageKind, { pages: number; zero: number }>;
  /** Pages of bulk/resent batches that had been handed out before. */
  repeats: number;
  /** Pages of urgent batches that had been handed out before (demanded while in flight). */
  urgentRepeats: number;
  switchovers: number;
  deviceStateBytes: number;
  /** Pages listed in the switchover's discard set. */
  discarded: number;
}

export interface RunReport {
  scenario: Scenario;
  /** The agreed outcome; undefined when the run hung or the two sides disagree. */
  outcome: Outcome | undefined;
  sourceOutcome: Outcome | undefined;
  destOutcome: Outcome | undefined;
  reasons: string[];
  hung: boolean;
  steps: number;
  now: number;
  source: MigrationSource;
  dest: MigrationDestination;
  /** The guest's RAM as the guest sees it: last write wherever it ran (the "final RAM"). */
  guestRam: Int32Array;
  /** The destination's copy; -1 never installed, -2 dropped by the discard set. */
  destRam: Int32Array;
  /** What the destination's copy was when it reported completion, if it did. */
  destRamAtCompletion: Int32Array | undefined;
  guestRamAtCompletion: Int32Array | undefined;
  /** Touches still waiting for a page on the destination at the end. */
  waitingTouches: number;
  guestStopped: At[];
  guestResumed: (At & { postcopy: boolean })[];
  postcopyStarted: At[];
  sourceEvents: (SourceEvent & { step: number })[];
  destEvents: (DestinationEvent & { step: number })[];
  handed: Handed;
  /** Pages handed out between round boundaries as the driver saw them (roundEnd, stop). */
  observedRounds: number[];
  /** Every demand request, in the order the destination issued them. */
  demands: number[][];
  violations: Violations;
}

// ---------------------------------------------------------------------------------------
// The driver

interface InFlight {
  msg: SourceMessage;
  bytes: number;
  /** Page versions as they were when the source handed the batch out, in batch order. */
  versions?: Int32Array;
}

interface Touch {
  pfn: number;
  write: boolean;
}

const LANES: Lane[] = ['control', 'bulk', 'urgent'];
const MAX_VIOLATIONS = 20;

type Action =
  | 'pull-bulk'
  | 'pull-urgent'
  | 'deliver-control'
  | 'deliver-bulk'
  | 'deliver-urgent'
  | 'back'
  | 'guest';

export function runScenario(s: Scenario): RunReport {
  return new Driver(s).run();
}

class Driver {
  private readonly rng: Random;
  private readonly memory: ModelMemory;
  private readonly source: MigrationSource;
  private readonly dest: MigrationDestination;
  private readonly lanes: Record<Lane, InFlight[]> = { control: [], bulk: [], urgent: [] };
  private readonly backLane: DestinationMessage[] = [];
  private readonly accessor: Accessor;
  private now = 0;
  private step = 0;
  private clock = 0;

  private readonly guestRam: Int32Array;
  private readonly destRam: Int32Array;
  /** Pages the destination holds, as the harness follows them. */
  private readonly destPresent: Uint8Array;
  /** Pages handed out at least once. */
  private readonly handedOnce: Uint8Array;
  /** Pages written on the source after their last handout (must be resent or discarded). */
  private readonly stale: Uint8Array;
  /** Pages with a demand request not yet answered by an arrival. */
  private readonly demanded: Uint8Array;
  /** Touches on the destination waiting for their page. */
  private readonly waiting = new Map<number, Touch[]>();
  private waitingCount = 0;
  private faultSequenceAt = 0;
  private guestSteps = 0;

  private where: 'source' | 'nowhere' | 'destination' = 'source';
  private postcopySwitched = false;
  private pagesThisRound = 0;
  private roundsOpen = true;

  private readonly report: RunReport;

  constructor(private readonly s: Scenario) {
    this.rng = seededRandom(s.seed);
    const n = s.pageCount;
    const zeros: number[] = [];
    for (let p = 0; p < n; p++) if (this.rng.int(100) < s.zeroPercent) zeros.push(p);
    this.memory = new ModelMemory(n, zeros);
    this.source = new MigrationSource(s.config, this.memory, this.memory);
    this.dest = new MigrationDestination(n);
    this.accessor = new Accessor(s.workload.pattern, n, this.rng);
    this.guestRam = new Int32Array(n);
    this.destRam = new Int32Array(n).fill(-1);
    this.destPresent = new Uint8Array(n);
    this.handedOnce = new Uint8Array(n);
    this.stale = new Uint8Array(n);
    this.demanded = new Uint8Array(n);
    const kinds = (): Handed['byKind'] => ({
      bulk: { pages: 0, zero: 0 },
      urgent: { pages: 0, zero: 0 },
      prepaged: { pages: 0, zero: 0 },
      resent: { pages: 0, zero: 0 },
    });
    this.report = {
      scenario: s,
      outcome: undefined,
      sourceOutcome: undefined,
      destOutcome: undefined,
      reasons: [],
      hung: false,
      steps: 0,
      now: 0,
      source: this.source,
      dest: this.dest,
      guestRam: this.guestRam,
      destRam: this.destRam,
      destRamAtCompletion: undefined,
      guestRamAtCompletion: undefined,
      waitingTouches: 0,
      guestStopped: [],
      guestResumed: [],
      postcopyStarted: [],
      sourceEvents: [],
      destEvents: [],
      handed: {
        pages: 0,
        zeroPages: 0,
        batchBytes: 0,
        byKind: kinds(),
        repeats: 0,
        urgentRepeats: 0,
        switchovers: 0,
        deviceStateBytes: 0,
        discarded: 0,
      },
      observedRounds: [],
      demands: [],
      violations: { stale: [], demand: [], overwrite: [], lanes: [], wire: [] },
    };
  }

  run(): RunReport {
    for (let i = 0; i < this.s.workload.preStartWrites; i++) this.sourceWrite(this.rng.int(this.s.pageCount));
    this.source.start(this.now);
    this.drainSource();
    while (!this.over()) {
      if (this.step >= this.s.maxSteps) {
        this.report.hung = true;
        break;
      }
      this.step++;
      this.now += this.rng.float() * this.s.maxStepMs;
      this.act();
    }
    const r = this.report;
    r.steps = this.step;
    r.now = this.now;
    r.waitingTouches = this.waitingCount;
    if (!r.hung && r.sourceOutcome === r.destOutcome) r.outcome = r.sourceOutcome;
    return r;
  }

  /** Both sides finished, nothing is left on any lane or to hand out. */
  private over(): boolean {
    if (this.report.sourceOutcome === undefined || this.report.destOutcome === undefined) return false;
    if (this.backLane.length > 0 || LANES.some((l) => this.lanes[l].length > 0)) return false;
    return !LANES.some((l) => this.source.hasWork(l));
  }

  private act(): void {
    const w = this.s.weights;
    const options: [Action, number][] = [];
    const room = (l: Lane) => this.lanes[l].length < this.s.laneDepth;
    if (room('bulk') && this.source.hasWork('bulk')) options.push(['pull-bulk', w.pull]);
    if (room('urgent') && this.source.hasWork('urgent')) options.push(['pull-urgent', w.pull]);
    if (this.lanes.control.length > 0) options.push(['deliver-control', w.control]);
    if (this.lanes.bulk.length > 0) options.push(['deliver-bulk', w.bulk]);
    if (this.lanes.urgent.length > 0) options.push(['deliver-urgent', w.urgent]);
    if (this.backLane.length > 0) options.push(['back', w.back]);
    if (this.guestActive()) options.push(['guest', w.guest]);
    this.probeIdleLanes();
    if (options.length === 0) return; // only time passes
    let total = 0;
    for (const [, weight] of options) total += weight;
    let pick = this.rng.float() * total;
    let action = options[options.length - 1][0];
    for (const [a, weight] of options) {
      pick -= weight;
      if (pick < 0) {
        action = a;
        break;
      }
    }
    switch (action) {
      case 'pull-bulk':
        this.pull('bulk');
        break;
      case 'pull-urgent':
        this.pull('urgent');
        break;
      case 'deliver-control':
        this.deliver('control');
        break;
      case 'deliver-bulk':
        this.deliver('bulk');
        break;
      case 'deliver-urgent':
        this.deliver('urgent');
        break;
      case 'back':
        this.deliverBack();
        break;
      case 'guest':
        this.guestStep();
        break;
    }
  }

  private violation(kind: keyof Violations, what: string): void {
    const list = this.report.violations[kind];
    if (list.length < MAX_VIOLATIONS) list.push(`step ${this.step} t=${this.now.toFixed(3)}: ${what}`);
  }

  /** A lane with no work must yield nothing (occasionally asked, as a driver polling would). */
  private probeIdleLanes(): void {
    if (this.rng.int(8) !== 0) return;
    for (const lane of LANES) {
      if (this.source.hasWork(lane) || this.lanes[lane].length >= this.s.laneDepth) continue;
      const m = this.source.next(this.now, lane, this.s.budgetBytes);
      if (m !== null) {
        this.violation('wire', `hasWork('${lane}') was false but next() gave ${describe(m)}`);
        this.handOut(lane, m);
      }
    }
  }

  // -- source → destination -------------------------------------------------------------

  private pull(lane: Lane): void {
    const m = this.source.next(this.now, lane, this.s.budgetBytes);
    if (m) this.handOut(lane, m);
    else this.drainSource();
  }

  /** Records a message the source handed out and puts it on its lane. */
  private handOut(lane: Lane, m: SourceMessage): void {
    // Events of this call happened before the message was produced (a stop comes first).
    const stoppedNow = this.drainSource();
    const h = this.report.handed;
    const entry: InFlight = { msg: m, bytes: 0 };
    switch (m.type) {
      case 'pages': {
        const b = m.batch;
        entry.bytes = batchBytes(b.pageCount, b.zeroCount);
        entry.versions = this.capture(b);
        this.checkBatch(lane, b);
        h.pages += b.pageCount;
        h.zeroPages += b.zeroCount;
        h.batchBytes += entry.bytes;
        h.byKind[b.kind].pages += b.pageCount;
        h.byKind[b.kind].zero += b.zeroCount;
        forEachPage(b.runs, (p) => {
          if (this.handedOnce[p] && (b.kind === 'bulk' || b.kind === 'resent')) h.repeats++;
          if (this.handedOnce[p] && b.kind === 'urgent') h.urgentRepeats++;
          this.handedOnce[p] = 1;
          this.stale[p] = 0;
        });
        if (this.where === 'source' && this.roundsOpen && !stoppedNow) this.pagesThisRound += b.pageCount;
        break;
      }
      case 'roundEnd':
        this.closeRound();
        break;
      case 'switchover': {
        h.switchovers++;
        h.deviceStateBytes += m.deviceStateBytes;
        entry.bytes = m.deviceStateBytes;
        const discard = new Uint8Array(this.s.pageCount);
        forEachPage(m.discard, (p) => {
          discard[p] = 1;
          h.discarded++;
        });
        let missed = 0;
        const examples: number[] = [];
        for (let p = 0; p < this.s.pageCount; p++) {
          if (!this.stale[p]) continue;
          if (discard[p]) this.stale[p] = 0;
          else if (missed++ < 8) examples.push(p);
        }
        if (missed > 0)
          this.violation(
            'stale',
            `switchover (postcopy=${m.postcopy}) leaves ${missed} stale pages, e.g. ${examples.join(', ')}`,
          );
        break;
      }
      case 'complete':
      case 'abort':
        break;
    }
    this.lanes[lane].push(entry);
  }

  private closeRound(): void {
    if (!this.roundsOpen) return;
    this.report.observedRounds.push(this.pagesThisRound);
    this.pagesThisRound = 0;
  }

  private capture(b: PageBatch): Int32Array {
    const v = new Int32Array(b.pageCount);
    let i = 0;
    forEachPage(b.runs, (p) => {
      if (i < v.length) v[i] = this.memory.versions[p];
      i++;
    });
    return v;
  }

  private checkBatch(lane: Lane, b: PageBatch): void {
    let pages = 0;
    let zeros = 0;
    let bad = false;
    for (let i = 0; i < b.runs.length; i += 2) {
      const start = b.runs[i];
      const count = b.runs[i + 1];
      if (!(Number.isInteger(start) && Number.isInteger(count) && start >= 0 && count > 0)) bad = true;
      else if (start + count > this.s.pageCount) bad = true;
      else zeros += this.memory.zeroPagesIn(start, count);
      pages += count;
    }
    if (bad) this.violation('wire', `batch runs ${b.runs.join(',')} outside RAM of ${this.s.pageCount}`);
    if (pages !== b.pageCount)
      this.violation('wire', `batch pageCount ${b.pageCount} but runs hold ${pages}`);
    if (zeros !== b.zeroCount)
      this.violation('wire', `batch zeroCount ${b.zeroCount} but ${zeros} zero pages`);
    if (b.pageCount < 1) this.violation('wire', 'empty page batch');
    if (b.kind === 'urgent' && lane !== 'urgent' && this.s.config.postcopy.urgentLane)
      this.violation('lanes', `urgent batch ${b.runs.join(',')} handed out on the ${lane} lane`);
  }

  private deliver(lane: Lane): void {
    const entry = this.lanes[lane].shift()!;
    if (entry.bytes > 0) this.source.sent(this.now, entry.bytes);
    if (this.s.idleWhenDrained && LANES.every((l) => this.lanes[l].length === 0)) this.source.idle();
    const m = entry.msg;
    if (m.type === 'switchover') {
      forEachPage(m.discard, (p) => {
        this.destPresent[p] = 0;
        this.destRam[p] = -2;
      });
    }
    const arrival = this.dest.receive(this.now, m);
    if (m.type === 'switchover' && m.postcopy) this.postcopySwitched = true;
    if (arrival && m.type === 'pages')
      this.install(m.batch, entry.versions!, arrival.install, arrival.awaited);
    this.drainDest();
  }

  private install(b: PageBatch, versions: Int32Array, install: number[], awaited: number): void {
    // Offsets of the batch's pages, to find each installed page's captured version.
    const offsetOf = (pfn: number): number => {
      let off = 0;
      for (let i = 0; i < b.runs.length; i += 2) {
        if (pfn >= b.runs[i] && pfn < b.runs[i] + b.runs[i + 1]) return off + pfn - b.runs[i];
        off += b.runs[i + 1];
      }
      return -1;
    };
    let settled = 0;
    const woken: number[] = [];
    for (let i = 0; i < install.length; i += 2) {
      for (let p = install[i]; p < install[i] + install[i + 1]; p++) {
        const off = offsetOf(p);
        if (off < 0) {
          this.violation('overwrite', `installed pfn ${p} not in batch ${b.runs.join(',')}`);
          continue;
        }
        if (this.postcopySwitched && this.destPresent[p])
          this.violation('overwrite', `${b.kind} arrival installed over present pfn ${p}`);
        this.destRam[p] = versions[off];
        this.destPresent[p] = 1;
        if (this.demanded[p]) {
          this.demanded[p] = 0;
          settled++;
        }
        if (this.waiting.has(p)) woken.push(p);
      }
    }
    if (settled !== awaited)
      this.violation('demand', `arrival reports ${awaited} awaited pages, ${settled} had demands out`);
    for (const p of woken) {
      const touches = this.waiting.get(p)!;
      this.waiting.delete(p);
      this.waitingCount -= touches.length;
      for (const t of touches) if (t.write) this.destWrite(p);
    }
  }

  // -- destination → source -------------------------------------------------------------

  private deliverBack(): void {
    const m = this.backLane.shift()!;
    this.source.receive(this.now, m);
    this.drainSource();
  }

  private takeDestMessages(): void {
    for (const m of this.dest.takeMessages()) {
      if (m.type === 'demand') {
        this.report.demands.push(m.pfns);
        const seen = new Set<number>();
        for (const p of m.pfns) {
          if (seen.has(p)) this.violation('demand', `pfn ${p} twice in one demand`);
          else if (this.demanded[p]) this.violation('demand', `pfn ${p} demanded again while in flight`);
          else if (this.destPresent[p]) this.violation('demand', `pfn ${p} demanded while present`);
          seen.add(p);
          this.demanded[p] = 1;
        }
      }
      this.backLane.push(m);
    }
  }

  // -- events ---------------------------------------------------------------------------

  /** Applies the source's events; true when the guest stopped (or the migration ended) here. */
  private drainSource(): boolean {
    let stopped = false;
    for (let events = this.source.takeEvents(); events.length > 0; events = this.source.takeEvents())
      for (const e of events) {
        this.report.sourceEvents.push({ ...e, step: this.step });
        const at = { step: this.step, at: e.at };
        if (e.type === 'stop-guest') {
          // the driver stops the guest, then hands over: the engine syncs after the last write
          this.source.guestStopped(this.now);
        } else if (e.type === 'guest-stopped') {
          this.report.guestStopped.push(at);
          if (this.where === 'source') this.where = 'nowhere';
          this.closeRound();
          this.roundsOpen = false;
          stopped = true;
        } else if (e.type === 'postcopy-started') {
          this.report.postcopyStarted.push(at);
        } else if (e.type === 'guest-continued') {
          // the migration was abandoned after the stop: the guest runs on the source again
          if (this.where === 'nowhere') this.where = 'source';
        } else {
          this.report.sourceOutcome ??= e.outcome;
          this.report.reasons.push(`source: ${e.outcome}: ${e.reason}`);
          if (this.roundsOpen) {
            this.closeRound();
            this.roundsOpen = false;
          }
          stopped = true;
        }
      }
    return stopped;
  }

  private drainDest(): void {
    for (const e of this.dest.takeEvents()) {
      this.report.destEvents.push({ ...e, step: this.step });
      if (e.type === 'guest-resumed') {
        this.report.guestResumed.push({ step: this.step, at: e.at, postcopy: e.postcopy });
        this.where = 'destination';
      } else {
        this.report.destOutcome ??= e.outcome;
        this.report.reasons.push(`destination: ${e.outcome}: ${e.reason}`);
        if (e.outcome === 'completed' && !this.report.destRamAtCompletion) {
          this.report.destRamAtCompletion = this.destRam.slice();
          this.report.guestRamAtCompletion = this.guestRam.slice();
        }
      }
    }
    this.takeDestMessages();
  }

  // -- the guest ------------------------------------------------------------------------

  private guestActive(): boolean {
    const wl = this.s.workload;
    if (this.where === 'nowhere') return false;
    if (this.where === 'destination' && this.faultSequenceAt < wl.faultSequence.length) return true;
    return wl.steps === 0 || this.guestSteps < wl.steps;
  }

  private guestStep(): void {
    const wl = this.s.workload;
    this.guestSteps++;
    const touches = this.rng.int(wl.touchesPerStep + 1);
    for (let i = 0; i < touches; i++) {
      const write = this.rng.int(100) < wl.writePercent;
      if (this.where === 'source') {
        if (write) this.sourceWrite(this.accessor.nextPage());
        continue;
      }
      if (this.waitingCount >= wl.maxWaiting) break; // every task waits on a page
      const pfn =
        this.faultSequenceAt < wl.faultSequence.length
          ? wl.faultSequence[this.faultSequenceAt++] % this.s.pageCount
          : this.accessor.nextPage();
      this.destTouch(pfn, write);
    }
  }

  private sourceWrite(pfn: number): void {
    const v = ++this.clock;
    this.memory.write(pfn, v);
    this.guestRam[pfn] = v;
    if (this.handedOnce[pfn]) this.stale[pfn] = 1;
  }

  private destWrite(pfn: number): void {
    const v = ++this.clock;
    this.destRam[pfn] = v;
    this.guestRam[pfn] = v;
  }

  private destTouch(pfn: number, write: boolean): void {
    const r = this.dest.fault(this.now, pfn);
    const expected = this.destPresent[pfn] ? 'present' : this.demanded[pfn] ? 'waiting' : 'requested';
    if (r !== expected) this.violation('demand', `fault on pfn ${pfn} answered ${r}, expected ${expected}`);
    if (r === 'present') {
      if (write) this.destWrite(pfn);
    } else {
      const list = this.waiting.get(pfn) ?? [];
      list.push({ pfn, write });
      this.waiting.set(pfn, list);
      this.waitingCount++;
    }
    this.takeDestMessages();
  }
}

export function forEachPage(runs: number[], f: (pfn: number) => void): void {
  for (let i = 0; i < runs.length; i += 2) for (let p = runs[i]; p < runs[i] + runs[i + 1]; p++) f(p);
}

function describe(m: SourceMessage): string {
  return m.type === 'pages' ? `${m.batch.kind} pages ${m.batch.runs.join(',')}` : m.type;
}
