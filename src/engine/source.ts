// The source side of a migration: a sans-IO state machine. The driver asks it for the
// next message on a lane when that lane can take more (`next`), tells it when bytes
// have left (`sent`), hands it the destination's messages (`receive`), and drains its
// events (`takeEvents`): stop the guest here, the migration finished.

import { batchBytes, type MigrationConfig } from './config.ts';
import type { DestinationMessage, Lane, PageBatch, PageKind, SourceMessage } from './messages.ts';
import { PAGE_SIZE } from './messages.ts';
import { PageSet } from './page-set.ts';
import { newSourceStats, type Outcome, type SourceStats } from './stats.ts';
import { policyFromRules, type StopPolicy } from './stop-policy.ts';

/** What the source engine needs to know about guest RAM. */
export interface GuestMemory {
  readonly pageCount: number;
  /** How many of the pages [start, start + count) are zero pages. */
  zeroPagesIn(start: number, count: number): number;
  /**
   * Supplies a batch's contents (data, zero mask and zero count) in one pass over its pages,
   * when the driver carries contents; without it the engine counts zero pages itself.
   */
  fillBatch?(batch: PageBatch): void;
}

/** The guest's dirty log, as the driver keeps it. */
export interface DirtyLog {
  /** Adds every page written since the previous sync to `into`, and clears the log. */
  sync(now: number, into: PageSet): void;
}

export type SourcePhase = 'precopy' | 'stopping' | 'stop-and-copy' | 'postcopy' | 'finished';

export type SourceEvent =
  /** Stop the guest now, then call `guestStopped` (with its device state). */
  | { type: 'stop-guest'; at: number }
  /** The guest's last instruction on the source was at `at`. */
  | { type: 'guest-stopped'; at: number }
  /** The migration was abandoned after the guest stopped here: resume it here. */
  | { type: 'guest-continued'; at: number }
  /** Postcopy began: the destination runs the guest from now on. */
  | { type: 'postcopy-started'; at: number }
  /** The migration ended. `aborted`: the guest keeps running here; `completed`: release it. */
  | { type: 'finished'; at: number; outcome: Outcome; reason: string };

/** Bandwidth is re-measured over windows at least this long, as QEMU does. */
const BANDWIDTH_WINDOW_MS = 100;
/** Below the stop threshold, the dirty log is re-synced after each step this long (QEMU: 50 ms). */
const STEP_MS = 50;

export class MigrationSource {
  readonly stats: SourceStats = newSourceStats();
  phase: SourcePhase = 'precopy';
  outcome: Outcome | undefined;

  private readonly policy: StopPolicy;
  /** Pages the destination lacks or holds stale: the current precopy bitmap, or the postcopy backlog. */
  private readonly pending: PageSet;
  /** Pages sent at least once, to tell resent pages from first sends and build the discard set. */
  private readonly everSent: PageSet;
  private cursor = 0;
  private readonly control: SourceMessage[] = [];
  private readonly urgentQueue: PageBatch[] = [];
  /** Pages picked for prepaging, sent on the bulk lane ahead of the scan. */
  private readonly prepage: PageSet;
  private readonly events: SourceEvent[] = [];
  private startedAt = 0;
  private previousSyncPages = Number.POSITIVE_INFINITY;
  private sentThisRound = 0;
  private windowStart = -1;
  private windowBytes = 0;
  private completeSent = false;
  /** What follows once the driver has stopped the guest. */
  private afterStop: 'stop-and-copy' | 'postcopy' = 'stop-and-copy';
  private deviceState: Uint8Array | undefined;

  constructor(
    readonly config: MigrationConfig,
    private readonly memory: GuestMemory,
    private readonly dirtyLog: DirtyLog,
  ) {
    this.policy = policyFromRules(config.stop);
    this.pending = new PageSet(memory.pageCount);
    this.everSent = new PageSet(memory.pageCount);
    this.prepage = new PageSet(memory.pageCount);
  }

  get ramBytes(): number {
    return this.memory.pageCount * PAGE_SIZE;
  }

  /** Pages not yet on the destination (or stale there). */
  get pendingPages(): number {
    return this.pending.size;
  }

  start(now: number): void {
    this.startedAt = now;
    // Dirty logging starts now; everything goes in the first round, so earlier writes are dropped.
    this.dirtyLog.sync(now, new PageSet(this.memory.pageCount));
    if (this.config.mode === 'postcopy') {
      this.stats.rounds = 0;
      this.requestStop(now, 'postcopy');
      return;
    }
    this.pending.addRange(0, this.memory.pageCount);
    this.stats.rounds = 1;
  }

  takeEvents(): SourceEvent[] {
    return this.events.splice(0);
  }

  /** Whether `lane` has something to send right now. */
  hasWork(lane: Lane): boolean {
    if (lane === 'urgent') return this.config.postcopy.urgentLane && this.urgentQueue.length > 0;
    if (lane !== 'bulk') return false;
    if (this.control.length > 0) return true;
    if (this.phase === 'finished' || this.phase === 'stopping' || this.completeSent) return false;
    return true; // precopy, stop-and-copy and postcopy always have a next step until complete
  }

  /**
   * The next message for `lane`, with page batches of at most `budgetBytes` (at least one
   * page), or null when the lane has nothing to send now.
   */
  next(now: number, lane: Lane, budgetBytes: number): SourceMessage | null {
    if (lane === 'urgent') {
      if (!this.config.postcopy.urgentLane) return null;
      const b = this.urgentQueue.shift();
      return b ? this.pagesMessage(now, b) : null;
    }
    if (lane !== 'bulk') return null;
    for (;;) {
      const ctl = this.control.shift();
      if (ctl) return ctl;
      if (this.phase === 'finished' || this.phase === 'stopping' || this.completeSent) return null;
      // no urgent lane: demand pages go first here
      const urgent = this.config.postcopy.urgentLane ? undefined : this.urgentQueue.shift();
      if (urgent) return this.pagesMessage(now, urgent);
      const maxPages = Math.max(1, Math.floor(budgetBytes / (PAGE_SIZE + 8)));
      if (this.prepage.size > 0) return this.pagesMessage(now, this.takePrepaged(maxPages));
      if (this.phase === 'precopy') {
        const m = this.nextPrecopy(now, maxPages);
        if (m) return m;
        continue; // a checkpoint changed phase or queued control messages
      }
      if (this.phase === 'stop-and-copy') {
        if (this.pending.size > 0) return this.pagesMessage(now, this.take(this.pending, maxPages, 'bulk'));
        this.completeSent = true; // the destination has everything once the switchover lands
        return this.switchoverMessage(false, []);
      }
      // postcopy: background push in scan order
      if (this.pending.size > 0) return this.pagesMessage(now, this.take(this.pending, maxPages, 'bulk'));
      if (!this.completeSent) {
        this.completeSent = true;
        return { type: 'complete', totalPages: this.memory.pageCount };
      }
      return null;
    }
  }

  /** `bytes` of a message handed out by `next` have left on the wire. */
  sent(now: number, bytes: number): void {
    if (this.windowStart < 0) return;
    this.windowBytes += bytes;
    const elapsed = now - this.windowStart;
    if (elapsed >= BANDWIDTH_WINDOW_MS) {
      this.stats.bandwidth = (this.windowBytes * 1000) / elapsed;
      this.windowStart = now;
      this.windowBytes = 0;
    }
  }

  /** The link went idle (nothing queued): the next window starts when sending resumes. */
  idle(): void {
    this.windowStart = -1;
    this.windowBytes = 0;
  }

  receive(now: number, msg: DestinationMessage): void {
    switch (msg.type) {
      case 'demand': {
        // the pages of one request travel in one urgent batch
        const runs: number[] = [];
        const asked = new Set<number>();
        for (const pfn of msg.pfns) {
          if (asked.has(pfn)) continue;
          asked.add(pfn);
          if (this.demand(pfn)) runs.push(pfn, 1);
        }
        if (runs.length > 0) this.urgentQueue.push(this.batch('urgent', runs, runs.length / 2));
        return;
      }
      case 'resumed':
        return;
      case 'done':
        if (this.phase === 'postcopy' || this.phase === 'stop-and-copy')
          this.finish(now, 'completed', 'all pages on the destination');
        return;
      case 'abort':
        this.fail(now, `destination aborted: ${msg.reason}`);
        return;
    }
  }

  /**
   * Cancels before the switchover (the guest keeps running here, or carries on once the
   * driver's stop returns: it could not hold the guest's clients, say); false once it is
   * too late.
   */
  cancel(now: number, reason: string): boolean {
    if (this.phase !== 'precopy' && this.phase !== 'stopping') return false;
    this.control.push({ type: 'abort', reason });
    this.finish(now, 'aborted', reason);
    return true;
  }

  private fail(now: number, reason: string): void {
    if (this.phase === 'finished') return;
    if (this.phase === 'stop-and-copy') {
      // The destination never resumed the guest (it aborts only before resuming): the
      // guest carries on here.
      this.events.push({ type: 'guest-continued', at: now });
      this.finish(now, 'aborted', reason);
      return;
    }
    // Before the switchover the guest never left; in postcopy it runs on the destination.
    this.finish(now, this.phase === 'precopy' ? 'aborted' : 'failed', reason);
  }

  private finish(now: number, outcome: Outcome, reason: string): void {
    this.phase = 'finished';
    this.outcome = outcome;
    this.events.push({ type: 'finished', at: now, outcome, reason });
  }

  /**
   * Precopy sends the pages dirty at the last sync in scan order; the first round is a
   * full pass over RAM. After it, as QEMU does, once what is left fits the downtime budget
   * (remaining ≤ bandwidth × limit) it syncs the dirty log and applies the stop rules, and
   * from then on re-checks after every step of `STEP_MS` worth of data, so a quiet moment
   * in the guest is not missed.
   */
  private nextPrecopy(now: number, maxPages: number): SourceMessage | null {
    const threshold =
      this.stats.rounds > 1
        ? (this.stats.bandwidth * this.config.stop.downtimeLimitMs) / 1000 / PAGE_SIZE
        : 0;
    if (this.pending.size === 0 || this.pending.size <= threshold) {
      // a new round's pages go after the previous round's roundEnd
      if (!this.checkpoint(now) || this.control.length > 0) return null;
    }
    const step = Math.ceil((this.stats.bandwidth * STEP_MS) / 1000 / PAGE_SIZE);
    const toThreshold = Math.ceil(this.pending.size - threshold);
    const n = Math.max(1, Math.min(maxPages, Math.max(toThreshold, step)));
    return this.pagesMessage(now, this.take(this.pending, n, 'bulk'));
  }

  /** Syncs the dirty log and applies the stop rules; false when precopy ended here. */
  private checkpoint(now: number): boolean {
    this.dirtyLog.sync(now, this.pending);
    const dirty = this.pending.size;
    const progress = {
      elapsedMs: now - this.startedAt,
      round: this.stats.rounds,
      remainingBytes: dirty * PAGE_SIZE,
      bandwidth: this.stats.bandwidth,
      bytesSent: this.stats.bytesSent,
      ramBytes: this.ramBytes,
    };
    let verdict = this.policy.verdict(progress);
    if (dirty === 0) verdict = 'stop'; // nothing left to send: stopping costs nothing
    if (verdict === 'stop') {
      this.closeRound(now);
      this.requestStop(now, 'stop-and-copy');
      return false;
    }
    if (this.config.mode === 'hybrid' && this.hybridSwitchDue(dirty)) {
      this.closeRound(now);
      this.requestStop(now, 'postcopy');
      return false;
    }
    if (verdict === 'give-up') {
      this.closeRound(now);
      const what = this.config.stop.onNoConvergence;
      if (what === 'abort') {
        this.control.push({ type: 'abort', reason: `precopy did not converge (${this.policy.name})` });
        this.finish(now, 'aborted', `precopy did not converge (${this.policy.name})`);
      } else this.requestStop(now, what === 'force' ? 'stop-and-copy' : 'postcopy');
      return false;
    }
    this.closeRound(now);
    this.control.push({ type: 'roundEnd', round: this.stats.rounds });
    this.stats.rounds++;
    this.previousSyncPages = dirty;
    return true;
  }

  /** A round is what was sent between two dirty-log syncs. */
  private closeRound(now: number): void {
    this.stats.roundPages.push(this.sentThisRound);
    this.stats.roundEndMs.push(now - this.startedAt);
    this.sentThisRound = 0;
  }

  private hybridSwitchDue(dirty: number): boolean {
    const rounds = this.config.hybrid.rounds;
    if (rounds > 0) return this.stats.rounds >= rounds;
    return dirty >= this.previousSyncPages; // the dirty set stopped shrinking
  }

  /** Asks the driver to stop the guest; nothing more is sent until it has. */
  private requestStop(now: number, then: 'stop-and-copy' | 'postcopy'): void {
    this.phase = 'stopping';
    this.afterStop = then;
    this.events.push({ type: 'stop-guest', at: now });
  }

  /**
   * The driver stopped the guest (its last instruction ran at `now`): the final dirty-log
   * sync happens here, after the last write. `deviceState` is the vCPU and device
   * snapshot the destination resumes from.
   */
  guestStopped(now: number, deviceState?: Uint8Array): void {
    if (this.phase !== 'stopping') throw new Error(`guestStopped in phase ${this.phase}`);
    this.deviceState = deviceState;
    this.events.push({ type: 'guest-stopped', at: now });
    this.dirtyLog.sync(now, this.pending); // final sync: nothing dirties after this
    if (this.afterStop === 'stop-and-copy') this.phase = 'stop-and-copy';
    else this.beginPostcopy(now);
  }

  private beginPostcopy(now: number): void {
    const n = this.memory.pageCount;
    const neverSent = new PageSet(n);
    neverSent.addRange(0, n);
    neverSent.deleteAll(this.everSent);
    // Pages the destination holds stale copies of (pending ∩ sent before): it drops them.
    const discard = new PageSet(n);
    discard.addAll(this.pending);
    discard.deleteAll(neverSent);
    this.pending.addAll(neverSent);
    this.phase = 'postcopy';
    this.cursor = 0;
    this.control.push(this.switchoverMessage(true, discard.toRuns()));
    this.events.push({ type: 'postcopy-started', at: now });
  }

  private switchoverMessage(postcopy: boolean, discard: number[]): SourceMessage {
    const state = this.deviceState;
    const bytes = state ? state.length : this.config.deviceStateBytes;
    this.stats.bytesSent += bytes;
    return state
      ? { type: 'switchover', postcopy, discard, deviceStateBytes: bytes, deviceState: state }
      : { type: 'switchover', postcopy, discard, deviceStateBytes: bytes };
  }

  /**
   * A demand the runtime's fault path answered itself, off the engine's loop (the source's
   * RAM is frozen in postcopy): its pages left on the urgent lane already, `zeroPages` of
   * them zero. Accounted as the engine would have sent them; neighbours are prepaged and
   * the push jumps as for a demand it received. Outside postcopy nothing is recorded.
   */
  demandServed(now: number, pfns: readonly number[], zeroPages: number): void {
    const runs: number[] = [];
    const asked = new Set<number>();
    for (const pfn of pfns) {
      if (
        asked.has(pfn) ||
        !(this.phase === 'postcopy' && Number.isInteger(pfn) && pfn >= 0 && pfn < this.memory.pageCount)
      )
        continue;
      asked.add(pfn);
      // a page still unsent leaves the push; one sent before is a resend (counted there,
      // or here when the configuration would not have resent it)
      if (!this.demand(pfn)) this.stats.demandResends++;
      runs.push(pfn, 1);
    }
    if (runs.length === 0) return;
    const pageCount = runs.length / 2;
    this.pagesMessage(now, { kind: 'urgent', runs, pageCount, zeroCount: Math.min(zeroPages, pageCount) });
  }

  /** A remote fault reached the source: true when the page goes now; prepages around it. */
  private demand(pfn: number): boolean {
    if (this.phase !== 'postcopy' || !(pfn >= 0 && pfn < this.memory.pageCount)) return false;
    // not yet sent (still in the push, or queued for prepaging): it goes now instead
    const unsent = this.pending.delete(pfn) || this.prepage.delete(pfn);
    if (!unsent) {
      // Sent already, yet the destination lacks it: the copy is still queued on the bulk lane.
      // A second copy on the urgent lane costs a page and saves the queue's wait (the
      // destination keeps whichever lands first and drops the other). Without an urgent
      // lane the second copy would queue behind the first, so it is not sent.
      const { resendInFlight, urgentLane } = this.config.postcopy;
      if (!(resendInFlight && urgentLane)) return false;
      this.stats.demandResends++;
      return true; // its neighbours were dealt with when it was first sent
    }
    const { prepageForward: fwd, prepageBackward: back, jumpToFault } = this.config.postcopy;
    for (let i = 1; i <= back; i++)
      if (pfn - i >= 0 && this.pending.delete(pfn - i)) this.prepage.add(pfn - i);
    for (let i = 1; i <= fwd; i++)
      if (pfn + i < this.memory.pageCount && this.pending.delete(pfn + i)) this.prepage.add(pfn + i);
    if (jumpToFault) this.cursor = pfn + 1 + fwd;
    return true;
  }

  private takePrepaged(maxPages: number): PageBatch {
    const runs: number[] = [];
    const n = this.prepage.takeRuns(0, maxPages, runs);
    return this.batch('prepaged', runs, n);
  }

  /** Takes up to `n` pages from `set` at the scan cursor. */
  private take(set: PageSet, n: number, kind: PageKind): PageBatch {
    const runs: number[] = [];
    const count = set.takeRuns(this.cursor, n, runs);
    if (runs.length > 0) this.cursor = runs[runs.length - 2] + runs[runs.length - 1];
    return this.batch(kind, runs, count);
  }

  private batch(kind: PageKind, runs: number[], pageCount: number): PageBatch {
    const b: PageBatch = { kind, runs, pageCount, zeroCount: 0 };
    if (this.memory.fillBatch) this.memory.fillBatch(b);
    else
      for (let i = 0; i < runs.length; i += 2) b.zeroCount += this.memory.zeroPagesIn(runs[i], runs[i + 1]);
    return b;
  }

  /** Accounts a batch as it is handed to the transport. */
  private pagesMessage(now: number, b: PageBatch): SourceMessage {
    const s = this.stats.pagesSent;
    const nonZero = b.pageCount - b.zeroCount;
    s.zero += b.zeroCount;
    if (b.kind === 'urgent' || b.kind === 'prepaged') s[b.kind] += nonZero;
    else {
      let resent = 0;
      for (let i = 0; i < b.runs.length; i += 2)
        resent += this.everSent.countRange(b.runs[i], b.runs[i] + b.runs[i + 1]);
      // Zero pages are counted as such; assume they were among the first sends.
      const firstSends = b.pageCount - resent;
      s.bulk += Math.max(0, firstSends - b.zeroCount);
      s.resent += resent - Math.max(0, b.zeroCount - firstSends);
      if (this.phase === 'precopy') this.sentThisRound += b.pageCount;
    }
    for (let i = 0; i < b.runs.length; i += 2) this.everSent.addRange(b.runs[i], b.runs[i] + b.runs[i + 1]);
    this.stats.bytesSent += batchBytes(b.pageCount, b.zeroCount);
    if (this.windowStart < 0) this.windowStart = now;
    return { type: 'pages', batch: b };
  }
}
