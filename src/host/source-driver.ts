// The real world's source side: the engine's MigrationSource fed with the VM's guest RAM
// and dirty log, its messages sent over the lanes, the guest stopped when the engine asks.

import type { MigrationConfig } from '../engine/config.ts';
import { batchBytes } from '../engine/config.ts';
import type { DestinationMessage, Message, SourceMessage } from '../engine/messages.ts';
import { PAGE_SIZE } from '../engine/messages.ts';
import { MigrationSource, type SourceEvent } from '../engine/source.ts';
import type { Outcome } from '../engine/stats.ts';
import { type DeviceState, encodeDeviceState, type GuestMachine } from '../guest/machine.ts';
import { isFaultPathLane } from './fault-path.ts';
import { BATCH_PAGES, framePool, PUSH_BATCH_PAGES } from './frame-pool.ts';
import { fillBatch, ramHashOffThread } from './pages.ts';
import type { LaneConnection } from './transport.ts';

export interface Lanes {
  control: LaneConnection;
  bulk: LaneConnection;
  urgent: LaneConnection;
}

/** The host-side devices of the guest (its clients' connections), as a migration moves them. */
export interface GuestDevices {
  /** As the guest stops: clients' bytes stop arriving here (they are kept for later). */
  quiesce(): Promise<void>;
  /** At the stop: the devices' state, which moves with the guest; they let go of it here. */
  save(): unknown;
  /** The guest carries on here (the migration was abandoned at the stop). */
  resumeHere(): void;
}

const NO_DEVICES: GuestDevices = { quiesce: async () => {}, save: () => undefined, resumeHere: () => {} };

export interface SourceResult {
  outcome: Outcome;
  reason: string;
  /** When the guest was asked to stop here (ms, this host's clock); -1 if it never was. */
  stoppedAt: number;
  /** When the postcopy began (the switchover left with pages still here); -1 if it never did. */
  postcopyAt: number;
  startedAt: number;
  endedAt: number;
}

/** Longest the push waits for the destination's "resumed" after a postcopy switchover. */
const PUSH_HOLD_MS = 100;

/** Bulk frames sent per event-loop turn. */
const FRAMES_PER_TURN = 2;
/** Absolute milliseconds (comparable between hosts on one machine), sub-ms precision. */
const now = () => performance.timeOrigin + performance.now();

export class SourceDriver {
  readonly source: MigrationSource;
  private waitingDrain = false;
  /** The push waits for the destination's "resumed" (see holdPush). */
  private pushHeld: NodeJS.Timeout | undefined;
  /** A pump is scheduled for the next event-loop turn. */
  private turnScheduled = false;
  private paceFrom = 0;
  private paceTimer: NodeJS.Timeout | undefined;
  /** When the driver asked the guest to stop; -1 until it does. */
  private pauseRequestedAt = -1;
  private state: DeviceState | undefined;
  private finished = false;
  private result: Partial<SourceResult> = { stoppedAt: -1, postcopyAt: -1 };
  private resolveDone!: (r: SourceResult) => void;
  readonly done: Promise<SourceResult>;
  /** The RAM's checksum at the stop, once computed (compare with the destination's). */
  ramHash: Promise<string> | undefined;
  /** Progress for displays: bytes handed to the lanes so far. */
  bytesSent = 0;

  constructor(
    private readonly machine: GuestMachine,
    private readonly lanes: Lanes,
    config: MigrationConfig,
    private readonly log: (line: string) => void = () => {},
    /** Caps the page rate (Mbit/s of page data on the bulk lane). */
    private readonly maxBandwidthMbps?: number,
    private readonly devices: GuestDevices = NO_DEVICES,
  ) {
    const ram = machine.ram;
    this.source = new MigrationSource(
      config,
      {
        pageCount: ram.pages,
        zeroPagesIn: (s, n) => ram.zeroPagesIn(s, n),
        // one look at each page: its zero check and its copy into the frame
        fillBatch: (b) => fillBatch(ram, b),
      },
      {
        sync: (_now, into) => {
          ram.syncDirty(into);
        },
      },
    );
    this.done = new Promise((r) => {
      this.resolveDone = r;
    });
    for (const lane of [lanes.control, lanes.bulk, lanes.urgent]) {
      lane.onMessage((m) => this.receive(m));
      lane.onClose((e) => this.laneLost(lane.lane, e?.message ?? 'closed'));
    }
    lanes.bulk.onDrain(() => {
      this.waitingDrain = false;
      this.pump();
    });
    const urgent = lanes.urgent;
    // demands the fault thread answers (postcopy, every demand answered on the urgent lane)
    if (isFaultPathLane(urgent) && config.postcopy.urgentLane && config.postcopy.resendInFlight) {
      this.serveOnThread = () => urgent.serveDemands();
      urgent.onServed((pfns, zeroPages, at) => {
        this.source.demandServed(at, pfns, zeroPages);
        this.account(true, batchBytes(pfns.length, zeroPages));
        this.afterEngine(); // its neighbours, prepaged
      });
    }
  }

  /** Hands the answering of demands to the fault thread, once the guest is frozen. */
  private serveOnThread = () => {};

  get pages(): number {
    return this.machine.ram.pages;
  }

  start(): void {
    this.result.startedAt = now();
    this.paceFrom = now();
    this.source.start(now());
    this.afterEngine();
  }

  /** Cancels before the switchover; false when it is too late. */
  cancel(reason: string): boolean {
    const ok = this.source.cancel(now(), reason);
    this.afterEngine();
    return ok;
  }

  private receive(m: Message): void {
    if ((m as DestinationMessage).type === 'resumed') this.releasePush();
    this.source.receive(now(), m as DestinationMessage);
    this.afterEngine();
  }

  /**
   * After a postcopy switchover the push waits for the destination's word that the guest
   * runs there ("resumed", sent once a vCPU ran; at most PUSH_HOLD_MS): on shared cores
   * its first frames otherwise keep the destination's vCPU threads off a core, and the
   * downtime lasts until one runs (the first postcopy of a 1 GiB VM between fresh hosts on
   * loopback: medians 5.1 against 8.7 ms over twenty clusters). Demands do not wait.
   */
  private holdPush(): void {
    this.pushHeld = setTimeout(() => this.releasePush(), PUSH_HOLD_MS);
  }

  private releasePush(): void {
    if (!this.pushHeld) return;
    clearTimeout(this.pushHeld);
    this.pushHeld = undefined;
    this.pump();
  }

  private afterEngine(): void {
    this.pumpUrgent();
    this.events();
    this.pump();
  }

  /** Called with every engine event, after the driver has acted on it. */
  onEvent: (e: SourceEvent) => void = () => {};

  private events(): void {
    for (const e of this.source.takeEvents()) {
      queueMicrotask(() => this.onEvent(e));
      switch (e.type) {
        case 'stop-guest':
          this.stopGuest();
          break;
        case 'guest-stopped':
          // clients go unanswered from the pause request on, not only once every vCPU halted
          this.result.stoppedAt = this.pauseRequestedAt;
          break;
        case 'guest-continued':
          this.resumeHere();
          break;
        case 'finished':
          this.finish(e.outcome, e.reason);
          break;
        case 'postcopy-started':
          this.result.postcopyAt = now();
          this.serveOnThread();
          break;
      }
    }
  }

  /**
   * Stops the guest at a task boundary, then lets the engine sync and switch over. The
   * switch holds the guest's client bytes while the vCPUs pause (what arrives meanwhile
   * waits in the device, which moves with the guest): the downtime pays for the longer
   * of the two, not both.
   */
  private stopGuest(): void {
    if (this.pauseRequestedAt >= 0) return;
    this.pauseRequestedAt = now();
    void Promise.allSettled([this.devices.quiesce(), this.machine.pause()]).then(([held, paused]) => {
      if (paused.status === 'rejected') {
        this.finish(
          'failed',
          `could not stop the guest: ${(paused.reason as Error)?.message ?? paused.reason}`,
        );
        return;
      }
      this.state = paused.value;
      if (held.status === 'rejected') {
        const why = (held.reason as Error)?.message ?? String(held.reason);
        this.cancel(`its clients could not be held for the switchover: ${why}`);
      }
      if (this.finished || this.source.phase !== 'stopping') {
        // the migration ended (a lane broke, a cancel) while the guest was pausing: the
        // destination never ran it, so it carries on here
        this.resumeHere();
        return;
      }
      // requests in progress stay queued in the devices' connection state, which moves
      // with the guest; they run again wherever it resumes
      const devices = this.devices.save();
      this.source.guestStopped(now(), encodeDeviceState({ ...this.state, pending: [], devices }));
      this.afterEngine();
    });
  }

  /** The guest carries on here, with its devices. */
  private resumeHere(): void {
    if (this.state && !this.machine.running) this.machine.resume({ ...this.state, pending: [] });
    this.devices.resumeHere();
  }

  private send(lane: LaneConnection, m: SourceMessage): boolean {
    if (m.type !== 'pages') return this.account(lane.send(m), 64);
    const frame = m.batch.frame; // filled by the engine's fillBatch
    return this.account(
      lane.send(m, () => framePool.give(frame)),
      batchBytes(m.batch.pageCount, m.batch.zeroCount),
    );
  }

  private account(ok: boolean, bytes: number): boolean {
    this.bytesSent += bytes;
    this.source.sent(now(), bytes);
    return ok;
  }

  private pumpUrgent(): void {
    while (this.source.hasWork('urgent')) {
      const m = this.source.next(now(), 'urgent', Number.POSITIVE_INFINITY);
      if (!m) break;
      this.send(this.lanes.urgent, m);
    }
  }

  /** Under a bandwidth cap: true when the bulk lane must wait (a timer resumes it). */
  private paced(): boolean {
    if (!this.maxBandwidthMbps) return false;
    const allowed = ((now() - this.paceFrom) * this.maxBandwidthMbps * 1e6) / 8 / 1000;
    if (this.bytesSent <= allowed) return false;
    if (!this.paceTimer) {
      const waitMs = ((this.bytesSent - allowed) * 8 * 1000) / (this.maxBandwidthMbps * 1e6);
      this.paceTimer = setTimeout(
        () => {
          this.paceTimer = undefined;
          this.pump();
        },
        Math.max(1, waitMs),
      );
    }
    return true;
  }

  private pump(): void {
    if (this.finished || this.turnScheduled) return;
    // A few frames per event-loop turn, then the loop reads the lanes: on loopback the
    // kernel takes megabytes before a write reports back-pressure, and a demand request
    // arriving meanwhile would wait for all of them.
    for (
      let frames = 0;
      !this.pushHeld && !this.waitingDrain && this.source.hasWork('bulk') && !this.paced();
      frames++
    ) {
      if (frames === FRAMES_PER_TURN) {
        this.turnScheduled = true;
        setImmediate(() => {
          this.turnScheduled = false;
          this.pump();
        });
        break;
      }
      const pages = this.source.phase === 'postcopy' ? PUSH_BATCH_PAGES : BATCH_PAGES;
      const m = this.source.next(now(), 'bulk', pages * (PAGE_SIZE + 8));
      if (!m) break;
      if (!this.send(this.lanes.bulk, m)) this.waitingDrain = true;
      if (m.type === 'switchover' && m.postcopy) this.holdPush();
      this.events();
      this.pumpUrgent();
    }
    this.events();
  }

  private laneLost(lane: string, why: string): void {
    if (this.finished) return;
    const phase = this.source.phase;
    if (phase === 'precopy') this.cancel(`the ${lane} lane broke: ${why}`);
    else if (phase === 'stopping' || phase === 'stop-and-copy') {
      // the destination never resumed: the guest carries on here
      this.resumeHere();
      this.finish('aborted', `the ${lane} lane broke during the stop-and-copy: ${why}`);
    } else this.finish('failed', `the ${lane} lane broke in ${phase}: ${why}`);
  }

  private finish(outcome: Outcome, reason: string): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.paceTimer);
    clearTimeout(this.pushHeld);
    this.result.outcome = outcome;
    this.result.reason = reason;
    this.result.endedAt = now();
    this.log(`migration ${outcome}: ${reason}`);
    if (outcome === 'completed') {
      // the RAM has been frozen since the stop: its checksum is what the destination must
      // have received (computed now, off the switchover's path)
      this.ramHash = ramHashOffThread(this.machine.ram);
      void this.machine.stop();
    }
    // last words (an abort) go out before the lanes close
    for (let m = this.source.next(now(), 'bulk', 0); m; m = this.source.next(now(), 'bulk', 0)) {
      try {
        this.lanes.bulk.send(m);
      } catch {
        break;
      }
    }
    for (const l of [this.lanes.control, this.lanes.bulk, this.lanes.urgent]) l.close();
    this.resolveDone(this.result as SourceResult);
  }
}
