// One simulated migration: the engine's source and destination wired to modelled
// lanes (fluid TCP flows over the network) in virtual time.

import { batchBytes, type MigrationConfig, migrationConfig } from '../engine/config.ts';
import { MigrationDestination } from '../engine/destination.ts';
import type { DestinationMessage, SourceMessage } from '../engine/messages.ts';
import { MigrationSource } from '../engine/source.ts';
import { histogram, type Outcome, percentiles } from '../engine/stats.ts';
import type { MigrationReport } from '../report/schema.ts';
import type { EventQueue } from './event-queue.ts';
import { type GuestHooks, SequentialAccessGuest } from './guest.ts';
import type { SimDirtyLog, SimGuestMemory } from './guest-memory.ts';
import type { Flow, Network } from './network.ts';
import type { Rng } from './rng.ts';
import type { MigrationSpec } from './scenario.ts';
import type { SimVm } from './vm.ts';

export interface MigrationProgress {
  vm: string;
  phase: string;
  pagesOnDestination: number;
  pages: number;
  /** Bytes that have left the source, and bytes handed to its lanes so far. */
  bytesOnWire: number;
  bytesQueued: number;
  remoteFaults: number;
  guestBlockedMs: number;
}

/** The path between two hosts, as the migration's lanes see it. */
export interface Path {
  /** The bulk lane's connection; the urgent lane shares its path with priority. */
  bulk: Flow;
  /** One-way latency, ms. */
  latencyMs: number;
}

export function configFromSpec(m: MigrationSpec): MigrationConfig {
  return migrationConfig({
    mode: m.mode,
    stop: {
      downtimeLimitMs: m.downtimeLimitMs,
      maxRounds: m.maxRounds,
      maxBytesFactor: m.maxBytesFactor,
      deadlineMs: m.deadlineS * 1000,
      onNoConvergence: m.onNoConvergence,
    },
    postcopy: {
      prepageForward: m.prepageForward,
      prepageBackward: m.prepageBackward,
      urgentLane: m.urgentLane,
      jumpToFault: true,
      resendInFlight: m.resendInFlight,
    },
    hybrid: { rounds: m.hybridRounds },
  });
}

function messageBytes(msg: SourceMessage): number {
  switch (msg.type) {
    case 'pages':
      return batchBytes(msg.batch.pageCount, msg.batch.zeroCount);
    case 'switchover':
      return 32 + msg.deviceStateBytes + msg.discard.length * 4;
    default:
      return 16;
  }
}

export class SimMigration {
  readonly source: MigrationSource;
  readonly destination: MigrationDestination;
  readonly memory: SimGuestMemory;
  private readonly dirty: SimDirtyLog;
  /** Created when the guest first runs on the destination during postcopy. */
  private guest: GuestHooks | undefined;
  private readonly guestRng: Rng;
  private startedAt = 0;
  private stoppedAt = -1;
  private resumedAt = -1;
  private postcopyAt = -1;
  private endedAt = -1;
  private outcome: Outcome | undefined;
  private reason = '';
  private bulkPagesInFlight = 0;
  private urgentBytes = 0;
  /** Guest counters when the migration began (the guest runs the whole simulation). */
  private readonly guestBase = { async: 0, sync: 0, blockedMs: 0 };
  private readonly missing: [number, number][] = [];
  /** Control messages waiting to ride with the next message on the bulk lane. */
  private readonly held: SourceMessage[] = [];
  /** Called once when the migration ends. */
  onEnd: (m: SimMigration) => void = () => {};

  constructor(
    private readonly queue: EventQueue,
    private readonly net: Network,
    readonly spec: MigrationSpec,
    readonly vm: SimVm,
    readonly from: string,
    private readonly path: Path,
    private readonly socketBuffer: number,
    rng: Rng,
  ) {
    this.memory = vm.memory;
    this.dirty = vm.dirty;
    this.source = new MigrationSource(configFromSpec(spec), this.memory, this.dirty);
    this.destination = new MigrationDestination(this.memory.pageCount);
    this.guestRng = rng;
  }

  get ended(): boolean {
    return this.outcome !== undefined;
  }

  /** Where the migration stands now, for progress displays. */
  progress(): MigrationProgress {
    const pages = this.memory.pageCount;
    const phase = this.ended
      ? (this.outcome as string)
      : this.source.phase === 'precopy'
        ? this.source.stats.rounds === 0
          ? 'starting'
          : `precopy round ${this.source.stats.rounds}`
        : this.source.phase;
    const lane = this.path.bulk.progress(this.queue.now);
    const sent = lane.sent;
    const queued = lane.queued;
    return {
      vm: this.vm.spec.name,
      phase,
      pagesOnDestination: this.destination.present.size,
      pages,
      bytesOnWire: sent,
      bytesQueued: queued,
      remoteFaults: this.destination.stats.remoteFaults,
      guestBlockedMs: (this.vm.runtime?.blockedMs ?? this.guest?.blockedMs ?? 0) - this.guestBase.blockedMs,
    };
  }

  start(): void {
    this.startedAt = this.queue.now;
    const rt = this.vm.runtime;
    if (rt) {
      rt.kernel.setCooperative(this.spec.cooperative);
      this.guestBase.async = rt.kernel.asyncFaults;
      this.guestBase.sync = rt.kernel.syncFaults;
      this.guestBase.blockedMs = rt.blockedMs;
    }
    this.queue.after(this.spec.setupMs, () => {
      if (rt) {
        // every host thread waits for a core; the clients' path also waits its turn on
        // the thread that installs the pages
        const { hostContention, pathContention, hostBusy } = this.vm.spec;
        rt.cpuFactor = 1 + hostContention;
        rt.pathFactor =
          pathContention !== undefined ? 1 + pathContention : (1 + hostContention) / (1 - hostBusy);
      }
      this.source.start(this.queue.now);
      this.afterSource();
    });
  }

  /** The simulation ran out of time. */
  timeout(): void {
    if (!this.ended) this.end('failed', 'the simulation ended before the migration did');
  }

  private fault(pfn: number): 'present' | 'wait' {
    const r = this.destination.fault(this.queue.now, pfn);
    if (r === 'present') return 'present';
    if (r === 'requested') this.afterDestination();
    return 'wait';
  }

  private end(outcome: Outcome, reason: string): void {
    if (this.ended) return;
    this.outcome = outcome;
    this.reason = reason;
    this.endedAt = this.queue.now;
    this.guest?.stop();
    if (this.vm.runtime) {
      this.vm.runtime.cpuFactor = 1;
      this.vm.runtime.pathFactor = 1;
    }
    if (outcome === 'completed') this.vm.runtime?.settle();
    this.sample(true);
    this.onEnd(this);
  }

  /** Handles the source's events, then keeps its lanes busy. */
  private afterSource(): void {
    this.sourceEvents();
    this.pump();
  }

  private sourceEvents(): void {
    for (const e of this.source.takeEvents()) {
      if (e.type === 'stop-guest') {
        // the simulated guest stops at once; the engine then syncs and switches over
        this.vm.runtime?.pause();
        this.source.guestStopped(this.queue.now);
        this.queue.after(0, () => this.afterSource());
      } else if (e.type === 'guest-stopped') {
        this.stoppedAt = e.at;
        this.sample(true);
      } else if (e.type === 'guest-continued') this.vm.runtime?.resume(null);
      else if (e.type === 'postcopy-started') this.postcopyAt = e.at;
      // a completed migration ends when the destination says so
      else if (e.type === 'finished' && e.outcome !== 'completed') this.end(e.outcome, e.reason);
    }
  }

  private afterDestination(): void {
    for (const e of this.destination.takeEvents()) {
      if (e.type === 'guest-resumed') {
        this.resumedAt = e.at;
        this.vm.runsOn = this.spec.to;
        const rt = this.vm.runtime;
        if (rt) {
          const dst = this.destination;
          const port = {
            present: (pfn: number) => dst.present.has(pfn),
            request: (pfn: number) => {
              this.fault(pfn);
            },
          };
          rt.resume(e.postcopy && dst.present.size < dst.pageCount ? port : null);
        } else if (e.postcopy) {
          this.guest = new SequentialAccessGuest(
            this.vm.spec,
            this.memory,
            this.queue,
            this.guestRng.fork(1),
            {
              fault: (pfn) => this.fault(pfn),
              present: (pfn) => this.destination.present.has(pfn),
            },
          );
          this.guest.start();
        }
      } else if (e.type === 'finished') this.end(e.outcome, e.reason);
    }
    const msgs = this.destination.takeMessages();
    if (msgs.length === 0) return;
    const delayMs = msgs.some((m) => m.type === 'demand') ? this.spec.demandDelayUs / 1000 : 0;
    this.queue.after(this.path.latencyMs + delayMs, () => this.toSource(msgs));
  }

  private toSource(msgs: DestinationMessage[]): void {
    for (const m of msgs) this.source.receive(this.queue.now, m);
    this.afterSource();
  }

  /**
   * Keeps the lanes fed. In postcopy the bulk lane holds at most a socket buffer, so a
   * demand page sent on it waits behind that much; in precopy nothing waits on queue
   * position, so a whole batch (up to the next stop-rule check) is one flow.
   */
  private pump(): void {
    const now = this.queue.now;
    const src = this.source;
    while (src.hasWork('urgent')) {
      const m = src.next(now, 'urgent', Number.POSITIVE_INFINITY);
      if (!m) break;
      this.sendUrgent(m);
    }
    const bulk = this.path.bulk;
    for (;;) {
      if (!src.hasWork('bulk')) break;
      let budget: number;
      if (src.phase === 'postcopy') {
        // like a socket, writable again once half the buffer has drained
        if (bulk.backlog > this.socketBuffer / 2) break;
        budget = this.socketBuffer - bulk.backlog;
      } else {
        if (this.bulkPagesInFlight > 0) break;
        budget = Number.POSITIVE_INFINITY;
      }
      const m = src.next(now, 'bulk', budget);
      if (!m) break;
      this.enqueue(bulk, m);
    }
    if (bulk.backlog === 0 && this.bulkPagesInFlight === 0) src.idle();
    this.sourceEvents(); // `next` may have ended precopy (stop rule, abort)
  }

  private enqueue(flow: Flow, m: SourceMessage): void {
    if (m.type === 'roundEnd') {
      // a few bytes that always precede more data on this lane: they travel with it
      this.held.push(m);
      return;
    }
    const msgs = this.held.length > 0 ? [...this.held.splice(0), m] : m;
    const bytes = messageBytes(m) + (Array.isArray(msgs) ? (msgs.length - 1) * 16 : 0);
    const isPages = m.type === 'pages';
    if (isPages && flow === this.path.bulk) this.bulkPagesInFlight++;
    this.net.send(flow, bytes, () => {
      if (isPages && flow === this.path.bulk) this.bulkPagesInFlight--;
      this.source.sent(this.queue.now, bytes);
      this.queue.after(this.path.latencyMs, () => this.toDestination(msgs));
      this.pump();
    });
  }

  /**
   * The urgent lane: demand pages leave ahead of the bulk lane's queue (its own connection,
   * never behind the socket buffer) and delay the bulk data by their size.
   */
  private sendUrgent(m: SourceMessage): void {
    const bytes = messageBytes(m);
    this.urgentBytes += bytes;
    // one event: the bytes leave, cross the path and land
    this.net.sendAhead(this.path.bulk, bytes, this.path.latencyMs, () => {
      this.source.sent(this.queue.now, bytes);
      this.toDestination(m);
    });
  }

  private toDestination(msgs: SourceMessage | SourceMessage[]): void {
    for (const m of Array.isArray(msgs) ? msgs : [msgs]) {
      const arrival = this.destination.receive(this.queue.now, m);
      if (arrival && arrival.install.length > 0) {
        this.guest?.arrived();
        this.vm.runtime?.arrived(arrival.install);
        this.sample(false);
      }
    }
    this.afterDestination();
  }

  /** Records pages still missing on the destination, at most once per 100 ms bin. */
  private sample(force: boolean): void {
    const now = this.queue.now;
    const last = this.missing[this.missing.length - 1];
    if (!force && last && Math.floor(last[0] / 100) === Math.floor(now / 100)) return;
    this.missing.push([Math.round(now), this.memory.pageCount - this.destination.present.size]);
  }

  report(variant: string): MigrationReport {
    const s = this.source.stats;
    const d = this.destination.stats;
    const end = this.endedAt >= 0 ? this.endedAt : this.queue.now;
    const rt = this.vm.runtime;
    return {
      vm: this.vm.spec.name,
      variant: variant || this.spec.variant,
      mode: this.spec.mode,
      cooperative: this.spec.cooperative,
      source: this.from,
      destination: this.spec.to,
      outcome: this.outcome ?? 'failed',
      reason: this.reason,
      startMs: this.startedAt,
      totalTimeMs: end - this.startedAt,
      switchoverMs: this.stoppedAt,
      downtimeMs: this.stoppedAt >= 0 && this.resumedAt >= 0 ? this.resumedAt - this.stoppedAt : 0,
      bytesSent: s.bytesSent,
      pagesSent: { ...s.pagesSent },
      rounds: s.rounds,
      roundPages: [...s.roundPages],
      roundEndMs: s.roundEndMs.map((t) => Math.round(t * 1000) / 1000),
      remoteFaults: d.remoteFaults,
      demandResends: s.demandResends,
      asyncFaults: rt ? rt.kernel.asyncFaults - this.guestBase.async : 0,
      syncFaults: rt ? rt.kernel.syncFaults - this.guestBase.sync : d.remoteFaults,
      vcpuBlockedMs: (rt ? rt.blockedMs : (this.guest?.blockedMs ?? 0)) - this.guestBase.blockedMs,
      faultLatencyUs: percentiles([...d.faultLatencyUs]),
      postcopyMs: this.postcopyAt >= 0 ? end - this.postcopyAt : 0,
      missingPages: this.missing.map((p) => [p[0], p[1]]),
      faultLatencyHistogram: histogram(d.faultLatencyUs),
    };
  }
}
