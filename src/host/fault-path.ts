// The host's side of its fault thread (fault-thread.ts): starts it, and hands each
// migration's urgent lane to the drivers as a lane like the others, whose frames the thread
// reads and writes. The drivers learn what the thread did on its own (demands sent, pages
// installed, demands answered) through the lane's fault-path hooks.

import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import type { Lane, Message } from '../engine/messages.ts';
import type { GuestMachine } from '../guest/machine.ts';
import type { RamBuffers } from '../guest/ram.ts';
import type { FaultPathRecord, FaultThreadOptions, FromFaultThread, ToFaultThread } from './fault-thread.ts';
import { type LaneConnection, TransportError } from './transport.ts';

/**
 * The fault thread's nice value unless the host is told otherwise. Its work per demand is
 * short and waited for; at the host's priority, a busy host's other threads (the push, the
 * clients, V8 compiling) hold it off a core for milliseconds now and then, and those waits
 * are the faults' tail. Higher than theirs, it takes a core as soon as a demand or its page
 * arrives. Below 0 needs root or CAP_SYS_NICE; refused, the thread stays at 0 and says so.
 */
export const FAULT_THREAD_NICE = -10;

/** An urgent lane held by the fault thread, with what the drivers need to know of it. */
export interface FaultPathLane extends LaneConnection {
  /** Source: the guest is frozen (postcopy); demands are answered on the thread from now on. */
  serveDemands(): void;
  /** Source: a demand the thread answered (its pages have left). */
  onServed(cb: (pfns: number[], zeroPages: number, at: number) => void): void;
  /**
   * Destination: the vCPUs' faults go to the thread, which installs urgent pages into the
   * VM's RAM and keeps their checksums in `sums` and `written` (shared with the driver).
   */
  takeFaults(machine: GuestMachine, sums: Uint32Array, written: Uint8Array): void;
  /** Destination: a demand request the thread sent. */
  onRequested(cb: (pfn: number, at: number) => void): void;
  /** Destination: urgent pages the thread installed. */
  onInstalled(cb: (runs: number[], at: number) => void): void;
  /** Destination: pages the host's loop installed, which parked faults may wait for. */
  pagesArrived(runs: number[]): void;
}

export function isFaultPathLane(lane: LaneConnection): lane is FaultPathLane {
  return 'serveDemands' in lane;
}

class ThreadLane implements FaultPathLane {
  readonly lane: Lane = 'urgent';
  readonly bufferedBytes = 0;
  error: TransportError | undefined;
  private closed = false;
  private readonly messageHandlers: ((msg: Message, seq: number) => void)[] = [];
  private readonly held: Message[] = [];
  private readonly closeHandlers: ((e?: TransportError) => void)[] = [];
  private readonly errorHandlers: ((e: TransportError) => void)[] = [];
  served: (pfns: number[], zeroPages: number, at: number) => void = () => {};
  requested: (pfn: number, at: number) => void = () => {};
  installed: (runs: number[], at: number) => void = () => {};

  constructor(
    private readonly thread: FaultPath,
    readonly migrationId: string,
    readonly remoteAddress: string,
    readonly peerCapabilities: number,
  ) {}

  private post(c: ToFaultThread, transfer: MessagePort[] = []) {
    this.thread.post(c, transfer);
  }

  send(msg: Message, written?: () => void): boolean {
    if (this.closed) throw new TransportError('closed', `urgent lane with ${this.remoteAddress} is closed`);
    // a page frame is copied over: only its pages, not the pool's chunk around them
    const m: Message =
      msg.type === 'pages'
        ? { ...msg, batch: { ...msg.batch, frame: undefined, data: msg.batch.data?.slice() } }
        : msg;
    this.post({ type: 'send', id: this.migrationId, msg: m });
    written?.();
    return true;
  }

  onDrain(): void {}

  onMessage(cb: (msg: Message, seq: number) => void): void {
    this.messageHandlers.push(cb);
    for (const m of this.held.splice(0)) cb(m, 0);
  }

  deliver(msg: Message): void {
    if (this.messageHandlers.length === 0) this.held.push(msg);
    for (const cb of this.messageHandlers) cb(msg, 0);
  }

  pauseReading(): void {
    this.post({ type: 'pause-reading', id: this.migrationId });
  }

  resumeReading(): void {
    this.post({ type: 'resume-reading', id: this.migrationId });
  }

  onError(cb: (e: TransportError) => void): void {
    this.errorHandlers.push(cb);
    const e = this.error;
    if (e) queueMicrotask(() => cb(e));
  }

  onClose(cb: (e?: TransportError) => void): void {
    this.closeHandlers.push(cb);
    if (this.closed) queueMicrotask(() => cb(this.error));
  }

  ended(error: TransportError | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.error = error;
    if (error) for (const cb of this.errorHandlers) cb(error);
    for (const cb of this.closeHandlers) cb(error);
  }

  close(): void {
    this.post({ type: 'close', id: this.migrationId });
  }

  destroy(): void {
    this.post({ type: 'destroy', id: this.migrationId });
  }

  serveDemands(): void {
    this.post({ type: 'serve', id: this.migrationId });
  }

  onServed(cb: (pfns: number[], zeroPages: number, at: number) => void): void {
    this.served = cb;
  }

  takeFaults(machine: GuestMachine, sums: Uint32Array, written: Uint8Array): void {
    const channels = Array.from({ length: machine.spec.vcpus }, () => new MessageChannel());
    const ends = channels.map((c) => c.port2);
    this.post(
      {
        type: 'attach',
        id: this.migrationId,
        ram: machine.ram.buffers,
        sums: sums.buffer as SharedArrayBuffer,
        written: written.buffer as SharedArrayBuffer,
        vcpus: ends,
      },
      ends,
    );
    machine.routeFaults(channels.map((c) => c.port1));
  }

  onRequested(cb: (pfn: number, at: number) => void): void {
    this.requested = cb;
  }

  onInstalled(cb: (runs: number[], at: number) => void): void {
    this.installed = cb;
  }

  pagesArrived(runs: number[]): void {
    this.post({ type: 'arrived', id: this.migrationId, runs });
  }
}

/** A host's fault thread, and the urgent lanes it holds. */
export class FaultPath {
  private readonly lanes = new Map<string, ThreadLane>();
  private readonly dials = new Map<
    string,
    { resolve: (l: ThreadLane) => void; reject: (e: Error) => void }
  >();
  private worker!: Worker;
  private closing = false;
  /** Where the urgent lanes into this host arrive. */
  port = 0;
  /** An urgent lane of an incoming migration arrived (announced with `expect`). */
  onLane: (lane: FaultPathLane) => void = () => {};

  private constructor(
    private readonly options: FaultThreadOptions,
    private readonly log: (line: string) => void,
  ) {}

  static async start(options: FaultThreadOptions, log: (line: string) => void): Promise<FaultPath> {
    const path = new FaultPath(options, log);
    await path.spawn();
    return path;
  }

  /** Starts the thread; resolves once it listens. */
  private spawn(): Promise<void> {
    const worker = new Worker(new URL('./fault-thread.mjs', import.meta.url), { workerData: this.options });
    this.worker = worker;
    return new Promise((resolve, reject) => {
      worker.once('error', reject);
      worker.on('message', (m: FromFaultThread) => {
        if (m.type !== 'listening') return this.fromThread(m);
        this.port = m.port;
        worker.off('error', reject);
        // a crash is reported once, by 'exit' (after 'error' names it)
        let why = 'it exited';
        worker.on('error', (e) => {
          why = e.message;
        });
        worker.on('exit', () => {
          if (!this.closing) this.died(why);
        });
        this.holdProcess();
        resolve();
      });
    });
  }

  /** The thread keeps the process alive while it holds a lane or opens one, not when idle. */
  private holdProcess(): void {
    if (this.lanes.size + this.dials.size > 0) this.worker.ref();
    else this.worker.unref();
  }

  post(c: ToFaultThread, transfer: MessagePort[] = []): void {
    this.worker.postMessage(c, transfer);
  }

  /** An incoming migration: its urgent lane is accepted when it comes. */
  expect(id: string): void {
    this.post({ type: 'expect', id });
  }

  /** An incoming migration given up before its lanes came. */
  forget(id: string): void {
    this.post({ type: 'forget', id });
  }

  /** Opens the urgent lane of outgoing migration `id`, whose guest RAM is `ram`. */
  dial(id: string, host: string, port: number, ram: RamBuffers): Promise<FaultPathLane> {
    if (this.closing) return Promise.reject(new Error("this host's fault thread is not running"));
    return new Promise((resolve, reject) => {
      this.dials.set(id, { resolve, reject });
      this.holdProcess();
      this.post({ type: 'dial', id, host, port, ram });
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.worker.terminate();
  }

  private fromThread(m: FromFaultThread): void {
    this.handle(m);
    this.holdProcess();
  }

  /** What the thread did on its own: to the lane's driver. */
  private booked(r: FaultPathRecord): void {
    const lane = this.lanes.get(r.id);
    if (!lane) return;
    if (r.type === 'requested') lane.requested(r.pfn, r.at);
    else if (r.type === 'installed') lane.installed(r.runs, r.at);
    else lane.served(r.pfns, r.zeroPages, r.at);
  }

  private handle(m: FromFaultThread): void {
    switch (m.type) {
      case 'lane': {
        const lane = new ThreadLane(this, m.id, m.remoteAddress, m.peerCapabilities);
        this.lanes.set(m.id, lane);
        const dial = this.dials.get(m.id);
        this.dials.delete(m.id);
        if (dial) dial.resolve(lane);
        else this.onLane(lane);
        return;
      }
      case 'dial-failed':
        this.dials.get(m.id)?.reject(new Error(m.message));
        this.dials.delete(m.id);
        return;
      case 'message':
        this.lanes.get(m.id)?.deliver(m.msg);
        return;
      case 'closed': {
        const lane = this.lanes.get(m.id);
        this.lanes.delete(m.id);
        lane?.ended(m.error && new TransportError(m.error.code, m.error.message));
        return;
      }
      case 'records':
        for (const r of m.records) this.booked(r);
        return;
      case 'log':
        this.log(m.line);
        return;
      case 'listening':
        return;
    }
  }

  /**
   * The thread died: its lanes are gone (their migrations end as a broken lane ends them),
   * and a new thread takes the next ones (at a new port).
   */
  private died(why: string): void {
    this.log(`the fault thread died (${why}); starting another`);
    const error = new TransportError('closed', `the fault thread died: ${why}`);
    for (const lane of this.lanes.values()) lane.ended(error);
    this.lanes.clear();
    for (const d of this.dials.values()) d.reject(error);
    this.dials.clear();
    this.spawn().catch((e) => {
      this.closing = true; // no further attempts: dials fail from now on
      this.log(`could not start a new fault thread: ${(e as Error).message}`);
    });
  }
}
