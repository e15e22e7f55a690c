// The real world's destination side: the engine's MigrationDestination fed with the
// lanes' frames; accepted pages are installed in guest RAM, the guest's remote faults
// become demand requests on the urgent lane, and the VM resumes here at the switchover.

import { MigrationDestination } from '../engine/destination.ts';
import type { DestinationMessage, Message, SourceMessage } from '../engine/messages.ts';
import type { Outcome } from '../engine/stats.ts';
import { type Percentiles, percentiles } from '../engine/stats.ts';
import { type DeviceState, decodeDeviceState, type GuestMachine } from '../guest/machine.ts';
import { type FaultPathLane, isFaultPathLane } from './fault-path.ts';
import { framePool } from './frame-pool.ts';
import { foldSums, installBatch } from './pages.ts';
import type { Lanes } from './source-driver.ts';
import type { LaneConnection } from './transport.ts';

export interface DestinationResult {
  outcome: Outcome;
  reason: string;
  /** When the guest's first vCPU ran here again (ms since the epoch); -1 if it never did. */
  resumedAt: number;
  endedAt: number;
  postcopy: boolean;
  remoteFaults: number;
  faultLatencyUs: Percentiles;
  faultLatencySamplesUs: number[];
  /** Checksum of the RAM as it arrived, to compare with the source's at the stop. */
  ramHash: string;
}

/**
 * Bulk frames are installed one per event-loop turn, so the loop's other work (the fault
 * thread's news, the clients) waits for at most one of them (a socket read hands over
 * several at once). Past this many bytes of queued frames the bulk lane stops reading and
 * TCP pushes back on the source.
 */
const BULK_BACKLOG_BYTES = 8 * 2 ** 20;

/** Bytes of page contents a bulk-lane message carries. */
function pageBytes(m: Message): number {
  const msg = m as SourceMessage;
  return msg.type === 'pages' ? (msg.batch.data?.length ?? 0) : 0;
}

/** How long the result waits for the vCPUs to say when they ran again. */
const RESUME_REPORT_MS = 1000;
/** Longest "resumed" waits for a vCPU to run before it goes anyway. */
const RESUMED_WAIT_MS = 50;

/** Absolute milliseconds (comparable between hosts on one machine), sub-ms precision. */
const now = () => performance.timeOrigin + performance.now();

/**
 * The destination's side of one migration, into a new VM. Its RAM is all zeros, or
 * (`ramZeroed` false) holds a former VM's data: then every page counts as written until the
 * migration's own record of it lands (a zero page's zeroes it).
 */
export class DestinationDriver {
  readonly destination: MigrationDestination;
  private readonly sums: Uint32Array;
  /** Pages that may hold data (this migration's, or a former VM's); the rest are zero. */
  private readonly written: Uint8Array;
  private finished = false;
  private readonly result: Partial<DestinationResult> = { resumedAt: -1, postcopy: false };
  private resolveDone!: (r: DestinationResult) => void;
  readonly done: Promise<DestinationResult>;
  /** The guest runs here now (at the switchover; in postcopy before every page arrived). */
  onResumed: (state: DeviceState) => void = () => {};
  /** The urgent lane, when a fault thread holds it. */
  private readonly faultPath: FaultPathLane | undefined;
  /** Bulk-lane messages not yet handed to the engine, in order. */
  private readonly backlog: Message[] = [];
  /** Page bytes in the backlog. */
  private backlogBytes = 0;
  private backlogScheduled = false;
  /** When the vCPUs ran again, once they report it. */
  private vcpusResumed: Promise<number> | undefined;
  /** Control messages waiting behind "resumed" for a vCPU to run (see flush). */
  private controlHeld: DestinationMessage[] | null = null;

  constructor(
    private readonly machine: GuestMachine,
    private readonly lanes: Lanes,
    private readonly log: (line: string) => void = () => {},
    options: { ramZeroed?: boolean } = {},
  ) {
    const ram = machine.ram;
    this.destination = new MigrationDestination(ram.pages);
    // shared with the fault thread, which installs urgent pages too
    this.sums = new Uint32Array(new SharedArrayBuffer(ram.pages * 4));
    this.written = new Uint8Array(new SharedArrayBuffer(ram.pages));
    if (options.ramZeroed === false) this.written.fill(1);
    this.done = new Promise((r) => {
      this.resolveDone = r;
    });
    machine.onFault = (pfn) => {
      this.destination.fault(now(), pfn);
      this.flush();
    };
    const urgent = lanes.urgent;
    if (isFaultPathLane(urgent)) {
      // the vCPUs' faults go to the fault thread, which asks for their pages and installs
      // them; the engine hears of both afterwards
      this.faultPath = urgent;
      urgent.takeFaults(machine, this.sums, this.written);
      urgent.onRequested((pfn, at) => {
        // here already (the host's loop installed it meanwhile): the thread wakes its waiters
        if (this.destination.faultRequested(at, pfn) === 'present') urgent.pagesArrived([pfn, 1]);
      });
      urgent.onInstalled((runs, at) => this.installedOnThread(runs, at));
    }
    lanes.bulk.onMessage((m) => this.queueBulk(m));
    for (const lane of [lanes.control, lanes.urgent]) lane.onMessage((m) => this.receive(m));
    for (const lane of [lanes.control, lanes.bulk, lanes.urgent])
      lane.onClose((e) => this.laneLost(lane.lane, e?.message ?? 'closed'));
  }

  private queueBulk(m: Message): void {
    // a switchover (or any message but pages) with nothing before it is taken now: the
    // guest waits for it
    if (this.backlog.length === 0 && (m as SourceMessage).type !== 'pages') {
      this.receive(m);
      return;
    }
    this.backlog.push(m);
    this.backlogBytes += pageBytes(m);
    if (this.backlogBytes >= BULK_BACKLOG_BYTES) this.lanes.bulk.pauseReading();
    this.scheduleBacklog();
  }

  private scheduleBacklog(): void {
    if (this.backlogScheduled) return;
    this.backlogScheduled = true;
    setImmediate(() => {
      this.backlogScheduled = false;
      const m = this.backlog.shift();
      if (m) {
        this.backlogBytes -= pageBytes(m);
        this.receive(m);
      }
      if (this.backlog.length > 0) this.scheduleBacklog();
      if (this.backlogBytes < BULK_BACKLOG_BYTES / 2) this.lanes.bulk.resumeReading();
    });
  }

  /** Hands every queued bulk message to the engine now (a lane closed behind them). */
  private drainBacklog(): void {
    for (let m = this.backlog.shift(); m; m = this.backlog.shift()) {
      this.backlogBytes -= pageBytes(m);
      this.receive(m);
    }
  }

  private receive(m: Message): void {
    const t = now();
    const msg = m as SourceMessage;
    if (msg.type === 'switchover') {
      const ram = this.machine.ram;
      for (let i = 0; i < msg.discard.length; i += 2) ram.markMissing(msg.discard[i], msg.discard[i + 1]);
    }
    // in postcopy the fault thread installs pages too: each page goes to whoever claims it
    const claim = this.faultPath !== undefined && this.destination.phase === 'postcopy';
    const arrival = this.destination.receive(t, msg);
    if (arrival && msg.type === 'pages' && arrival.install.length > 0) {
      const runs = installBatch(this.machine.ram, msg.batch, arrival.install, this.sums, this.written, claim);
      this.machine.pagesArrived(runs);
      if (arrival.awaited > 0) this.faultPath?.pagesArrived(runs);
    }
    // the pages are in guest RAM: the frame they came in can take another
    if (msg.type === 'pages') framePool.give(msg.batch.data);
    this.afterEngine(msg);
  }

  /** Urgent pages the fault thread installed: the engine counts them in. */
  private installedOnThread(runs: number[], at: number): void {
    let pageCount = 0;
    for (let i = 1; i < runs.length; i += 2) pageCount += runs[i];
    const arrival = this.destination.receive(at, {
      type: 'pages',
      batch: { kind: 'urgent', runs, pageCount, zeroCount: 0 },
    });
    if (arrival) this.machine.pagesArrived(arrival.install);
    this.afterEngine();
  }

  private afterEngine(msg?: SourceMessage): void {
    for (const e of this.destination.takeEvents()) {
      if (e.type === 'guest-resumed' && msg?.type === 'switchover')
        this.resume(e.at, e.postcopy, msg.deviceState);
      else if (e.type === 'finished') this.finish(e.outcome, e.reason);
    }
    this.flush();
  }

  private resume(at: number, postcopy: boolean, deviceState: Uint8Array | undefined): void {
    if (!deviceState) {
      this.finish('failed', 'switchover without device state');
      return;
    }
    const state = decodeDeviceState(deviceState);
    // until the vCPUs say when they ran: the switchover's arrival
    this.result.resumedAt = at;
    this.result.postcopy = postcopy;
    this.vcpusResumed = this.machine.resume(state);
    this.onResumed(state);
  }

  /**
   * Demand requests go on the urgent lane, everything else on the control lane. In postcopy
   * the word that the guest runs here ("resumed") waits until a vCPU ran (at most
   * RESUMED_WAIT_MS), and the control messages after it wait behind it: the source starts
   * its push on that word.
   */
  private flush(): void {
    for (const m of this.destination.takeMessages()) {
      if (m.type === 'demand') this.send(this.lanes.urgent, m);
      else if (this.controlHeld) this.controlHeld.push(m);
      else if (m.type === 'resumed' && this.destination.phase === 'postcopy' && this.vcpusResumed) {
        const held: DestinationMessage[] = [m];
        this.controlHeld = held;
        const waited = new Promise((r) => setTimeout(r, RESUMED_WAIT_MS).unref());
        void Promise.race([this.vcpusResumed, waited]).then(() => {
          this.controlHeld = null;
          for (const h of held) this.send(this.lanes.control, h);
        });
      } else this.send(this.lanes.control, m);
    }
  }

  private send(lane: LaneConnection, m: DestinationMessage): void {
    try {
      lane.send(m);
    } catch (e) {
      this.log(`could not send ${m.type}: ${(e as Error).message}`);
    }
  }

  private laneLost(lane: string, why: string): void {
    // what arrived before the close still counts (the last pages, an abort)
    this.drainBacklog();
    if (this.finished) return;
    if (this.destination.phase === 'incoming') this.finish('aborted', `the ${lane} lane broke: ${why}`);
    else if (this.destination.phase === 'postcopy')
      this.finish(
        'failed',
        `the ${lane} lane broke with ${this.machine.ram.pages - this.destination.present.size} pages missing: ${why}`,
      );
  }

  private finish(outcome: Outcome, reason: string): void {
    if (this.finished) return;
    this.finished = true;
    // a page the fault thread is still copying in has its checksum written next
    if (outcome === 'completed' && this.faultPath) this.machine.ram.settleInstalls();
    const ramHash = outcome === 'completed' ? foldSums(this.sums) : '';
    this.log(`incoming migration ${outcome}: ${reason}`);
    const d = this.destination.stats;
    Object.assign(this.result, {
      outcome,
      reason,
      endedAt: now(),
      remoteFaults: d.remoteFaults,
      faultLatencySamplesUs: [...d.faultLatencyUs],
      faultLatencyUs: percentiles([...d.faultLatencyUs]),
      ramHash,
    });
    if (outcome !== 'completed' && this.machine.running === false) void this.machine.stop();
    // the fault thread lets go of the VM with the lane: any later fault comes to this loop
    else if (this.faultPath) this.machine.routeFaults(null);
    // the source closes the lanes once it has our last word
    setTimeout(() => {
      for (const l of [this.lanes.control, this.lanes.bulk, this.lanes.urgent]) l.close();
    }, 1000).unref();
    // the downtime ends with the guest's first instruction here, not the switchover's
    // arrival (a vCPU that never says, one that died, leaves the arrival)
    const unheard = new Promise<number>((r) => setTimeout(r, RESUME_REPORT_MS, Number.NaN).unref());
    void Promise.race([this.vcpusResumed ?? Number.NaN, unheard]).then((at) => {
      if (Number.isFinite(at)) this.result.resumedAt = at;
      this.resolveDone(this.result as DestinationResult);
    });
  }
}
