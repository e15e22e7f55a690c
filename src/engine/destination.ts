// The destination side of a migration: a sans-IO state machine. The driver hands it the
// source's messages (`receive`, which says which pages to install) and the guest's
// remote faults (`fault`); it answers with messages for the source (`takeMessages`) and
// events (`takeEvents`): the guest may resume here, pages arrived, the migration ended.

import type { DestinationMessage, PageBatch, SourceMessage } from './messages.ts';
import { PageSet } from './page-set.ts';
import { type DestinationStats, newDestinationStats, type Outcome } from './stats.ts';

export type DestinationPhase = 'incoming' | 'postcopy' | 'running' | 'aborted';

export type DestinationEvent =
  /** The guest's first instruction here is at `at`. */
  | { type: 'guest-resumed'; at: number; postcopy: boolean }
  | { type: 'finished'; at: number; outcome: Outcome; reason: string };

/** What the driver must do with an arrived batch. */
export interface Arrival {
  /** Runs (`start, count` pairs) of the batch to write into guest RAM; the rest is dropped. */
  install: number[];
  /** How many installed pages had a remote fault waiting on them. */
  awaited: number;
}

export type FaultResult = 'present' | 'requested' | 'waiting';

export class MigrationDestination {
  readonly stats: DestinationStats = newDestinationStats();
  phase: DestinationPhase = 'incoming';
  /** Pages present here. */
  readonly present: PageSet;
  /** Pages requested by a remote fault and not yet arrived, with the request time. */
  private readonly requested = new Map<number, number>();
  private readonly outbox: number[] = [];
  private readonly messages: DestinationMessage[] = [];
  private readonly events: DestinationEvent[] = [];

  constructor(readonly pageCount: number) {
    this.present = new PageSet(pageCount);
  }

  /** Remote faults still waiting for their page. */
  get outstanding(): number {
    return this.requested.size;
  }

  takeEvents(): DestinationEvent[] {
    return this.events.splice(0);
  }

  /** Messages for the source; pending demand requests are batched into one. */
  takeMessages(): DestinationMessage[] {
    if (this.outbox.length > 0) this.messages.push({ type: 'demand', pfns: this.outbox.splice(0) });
    return this.messages.splice(0);
  }

  receive(now: number, msg: SourceMessage): Arrival | null {
    switch (msg.type) {
      case 'pages':
        return this.arrive(now, msg.batch);
      case 'roundEnd':
        return null;
      case 'switchover':
        if (this.phase !== 'incoming') return this.protocolError(now, `switchover in phase ${this.phase}`);
        for (let i = 0; i < msg.discard.length; i += 2)
          this.present.deleteRange(msg.discard[i], msg.discard[i] + msg.discard[i + 1]);
        if (msg.postcopy) {
          this.phase = 'postcopy';
          this.events.push({ type: 'guest-resumed', at: now, postcopy: true });
          this.messages.push({ type: 'resumed' });
          this.checkDone(now);
          return null;
        }
        if (this.present.size !== this.pageCount)
          return this.protocolError(
            now,
            `switchover with ${this.pageCount - this.present.size} pages missing`,
          );
        this.phase = 'running';
        this.events.push({ type: 'guest-resumed', at: now, postcopy: false });
        this.messages.push({ type: 'resumed' }, { type: 'done' });
        this.events.push({ type: 'finished', at: now, outcome: 'completed', reason: 'precopy completed' });
        return null;
      case 'complete': {
        // Demand pages travel on the urgent lane, which this message may overtake: only
        // pages awaited by a remote fault may still be missing.
        const missing = this.pageCount - this.present.size;
        if (this.phase === 'postcopy' && missing > this.requested.size)
          return this.protocolError(
            now,
            `source complete with ${missing - this.requested.size} pages missing that were never requested`,
          );
        return null;
      }
      case 'abort':
        if (this.phase === 'incoming') {
          this.phase = 'aborted';
          this.present.clear();
          this.events.push({ type: 'finished', at: now, outcome: 'aborted', reason: msg.reason });
        }
        return null;
    }
  }

  /**
   * The guest touched `pfn`. `present`: go on. `requested`: a demand request is queued
   * (send `takeMessages()`). `waiting`: a request for it is already in flight.
   */
  fault(now: number, pfn: number): FaultResult {
    if (this.present.has(pfn)) return 'present';
    if (this.phase !== 'postcopy')
      throw new Error(`remote fault on pfn ${pfn} outside postcopy (${this.phase})`);
    if (this.requested.has(pfn)) return 'waiting';
    this.requested.set(pfn, now);
    this.outbox.push(pfn);
    this.stats.remoteFaults++;
    return 'requested';
  }

  /**
   * A remote fault whose demand request the runtime's fault path sent itself: recorded as
   * `fault` records one (the request's time, the count), with nothing for `takeMessages`.
   * `present` when the page is here already (the fault path then wakes its waiters).
   */
  faultRequested(now: number, pfn: number): FaultResult {
    if (this.present.has(pfn)) return 'present';
    if (this.phase !== 'postcopy' || this.requested.has(pfn)) return 'waiting';
    this.requested.set(pfn, now);
    this.stats.remoteFaults++;
    return 'requested';
  }

  private arrive(now: number, b: PageBatch): Arrival | null {
    for (let i = 0; i < b.runs.length; i += 2) {
      if (!(b.runs[i] >= 0 && b.runs[i + 1] >= 0 && b.runs[i] + b.runs[i + 1] <= this.pageCount))
        return this.protocolError(
          now,
          `pages ${b.runs[i]}+${b.runs[i + 1]} outside RAM of ${this.pageCount} pages`,
        );
    }
    if (this.phase === 'aborted') return { install: [], awaited: 0 };
    if (this.phase === 'running') {
      // every page is here: a late second copy of a demanded page
      this.stats.duplicatesDropped += b.pageCount;
      return { install: [], awaited: 0 };
    }
    if (this.phase === 'incoming') {
      // Before the switchover the guest is not running here: newer copies overwrite.
      for (let i = 0; i < b.runs.length; i += 2) this.present.addRange(b.runs[i], b.runs[i] + b.runs[i + 1]);
      return { install: b.runs, awaited: 0 };
    }
    // Postcopy: a present page may already have been written by the guest; never overwrite.
    const install: number[] = [];
    let awaited = 0;
    for (let i = 0; i < b.runs.length; i += 2) {
      const start = b.runs[i];
      const end = start + b.runs[i + 1];
      let p = start;
      while (p < end) {
        const a = this.present.nextAbsent(p);
        if (a >= end) {
          this.stats.duplicatesDropped += end - p;
          break;
        }
        this.stats.duplicatesDropped += a - p;
        let e = this.present.next(a);
        if (e < 0 || e > end) e = end;
        this.present.addRange(a, e);
        install.push(a, e - a);
        if (this.requested.size > 0) awaited += this.settleRequests(now, a, e);
        p = e;
      }
    }
    this.checkDone(now);
    return { install, awaited };
  }

  private settleRequests(now: number, start: number, end: number): number {
    let n = 0;
    if (end - start < this.requested.size) {
      for (let p = start; p < end; p++) n += this.settle(now, p);
    } else {
      for (const p of [...this.requested.keys()]) if (p >= start && p < end) n += this.settle(now, p);
    }
    return n;
  }

  private settle(now: number, pfn: number): number {
    const at = this.requested.get(pfn);
    if (at === undefined) return 0;
    this.requested.delete(pfn);
    this.stats.faultLatencyUs.push(Math.round((now - at) * 1000));
    return 1;
  }

  private checkDone(now: number): void {
    if (this.phase === 'postcopy' && this.present.size === this.pageCount) {
      this.phase = 'running';
      this.messages.push({ type: 'done' });
      this.events.push({ type: 'finished', at: now, outcome: 'completed', reason: 'all pages arrived' });
    }
  }

  private protocolError(now: number, reason: string): null {
    this.messages.push({ type: 'abort', reason });
    if (this.phase === 'incoming') {
      this.phase = 'aborted';
      this.events.push({ type: 'finished', at: now, outcome: 'aborted', reason });
    } else {
      // Postcopy: the guest runs here and cannot go back; the migration failed loudly.
      this.events.push({ type: 'finished', at: now, outcome: 'failed', reason });
    }
    return null;
  }
}
