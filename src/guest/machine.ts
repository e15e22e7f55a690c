// A real VM as its host holds it: guest RAM, one worker thread per vCPU, and the devices
// between the guest and the outside: the request queue the guest serves and the path by
// which remote faults leave the guest and pages come back.

import type { MessagePort, Worker } from 'node:worker_threads';
import { PAGE_SIZE } from '../engine/messages.ts';
import type { GuestRam } from './ram.ts';
import { vcpuWorker } from './spare-vcpus.ts';
import {
  type AppConfig,
  addStats,
  CONTROL_ABORT,
  CONTROL_PAUSE,
  controlWords,
  epochMs,
  type FromVcpu,
  noStats,
  type Request,
  type ToVcpu,
  VCPU_HALTED,
  VCPU_HELD,
  type VcpuStats,
  vcpuRepliesWord,
  vcpuStateWord,
} from './vcpu-protocol.ts';

export interface MachineSpec {
  ramBytes: number;
  vcpus: number;
  app: AppConfig;
  /** Server tasks per vCPU (how many requests a vCPU can have in progress). */
  servers: number;
  /** Whether the app has a long job (memtouch) running on vCPU 0. */
  job: boolean;
  faultLimit: number;
}

/** What moves with the VM at the switchover besides its RAM. */
export interface DeviceState {
  spec: MachineSpec;
  /** Requests taken from clients and not yet answered; they run again on the destination. */
  pending: Request[];
  nextRequestId: number;
  /** Checksum of guest RAM when the guest stopped on the source (see host/pages.ts). */
  ramHash?: string;
  /** The host-side devices' state (clients' connections), opaque to the guest. */
  devices?: unknown;
}

/** The first pages of guest RAM belong to the guest kernel (one staging page per vCPU). */
export function kernelPages(vcpus: number): number {
  return vcpus;
}

/** A request's reply, and the time it spent between the host's thread and the vCPU's. */
export interface Served {
  reply: Uint8Array;
  /**
   * Its crossings between threads: waiting for a halted vCPU's thread to take it, and the
   * reply's wait for the host's thread (ms). Both wait for host cores, not for the guest.
   */
  hopMs: number;
}

export class GuestMachine {
  readonly control: Int32Array;
  private readonly workers: Worker[] = [];
  /**
   * Every request handed to a vCPU and not answered yet: new ones, with their caller
   * waiting, and those resumed with the guest.
   */
  private readonly inHand = new Map<
    number,
    { vcpu: number; req: Request; caller?: { resolve: (s: Served) => void; reject: (e: Error) => void } }
  >();
  /** Replies received from each vCPU, to compare with the count it posted. */
  private readonly repliesIn: number[] = [];
  /** Requests each vCPU holds and has not answered: a new one goes to the least busy. */
  private readonly outstanding: number[] = [];
  private nextId = 1;
  private rr = 0;
  private pausing: ((r: { vcpu: number; seq: number; pending: Request[] }) => void) | null = null;
  private pauses = 0;
  private statsWaiter: ((r: { vcpu: number; stats: VcpuStats }) => void) | null = null;
  /** Collects the vCPUs' resume times; NaN when the VM stops first. */
  private resuming: ((at: number) => void) | null = null;
  private statsStopped: (() => void) | null = null;
  private statsChain: Promise<unknown> = Promise.resolve();
  private stopped = false;
  /** Faults parked under tokens, by page: the vCPUs to tell "page ready". */
  private readonly tokens = new Map<number, { vcpu: number; token: number }[]>();
  /** A vCPU touched a page that is not here: the migration must fetch it. */
  onFault: (pfn: number) => void = () => {};
  onError: (message: string) => void = () => {};
  readonly stats: VcpuStats = noStats();
  /** vCPUs a pause found halted and held where they were (no hop to their threads). */
  heldInPlace = 0;
  running = false;

  private constructor(
    readonly spec: MachineSpec,
    readonly ram: GuestRam,
    private cooperative: boolean,
  ) {
    this.control = new Int32Array(new SharedArrayBuffer(controlWords(spec.vcpus) * 4));
  }

  /**
   * Boots the vCPUs on `ram`. A new VM has all its pages; an incoming one starts with
   * whatever the migration installed (missing pages fault).
   */
  static async boot(
    spec: MachineSpec,
    ram: GuestRam,
    opts: { cooperative: boolean; paused?: boolean },
  ): Promise<GuestMachine> {
    const m = new GuestMachine(spec, ram, opts.cooperative);
    // an incoming VM's vCPUs start ahead of the switchover, held until `resume`
    if (opts.paused) Atomics.store(m.control, CONTROL_PAUSE, 1);
    await Promise.all(Array.from({ length: spec.vcpus }, (_, v) => m.startVcpu(v, [])));
    m.running = !opts.paused;
    return m;
  }

  /**
   * Sends the vCPUs' remote faults to `ports` (one per vCPU, transferred: a fault thread's
   * ends of their channels), which also carry "page ready" back; null: to `onFault` again.
   */
  routeFaults(ports: MessagePort[] | null): void {
    this.workers.forEach((w, v) => {
      const port = ports?.[v] ?? null;
      w.postMessage({ type: 'faults', port } satisfies ToVcpu, port ? [port] : []);
    });
  }

  /** How remote faults are taken from now on. */
  setCooperative(on: boolean): void {
    this.cooperative = on;
  }

  private startVcpu(v: number, pending: Request[]): Promise<void> {
    const w = vcpuWorker();
    this.workers[v] = w;
    this.repliesIn[v] = 0;
    for (const req of pending) this.inHand.set(req.id, { vcpu: v, req });
    return new Promise((resolve, reject) => {
      w.on('message', (msg: FromVcpu) => {
        if (msg.type === 'started') resolve();
        else this.fromVcpu(msg);
      });
      w.on('error', (e) => {
        reject(e);
        this.onError(`vCPU ${v} died: ${e.message}`);
      });
      const start: ToVcpu = {
        type: 'start',
        vcpu: v,
        ram: this.ram.buffers,
        control: this.control.buffer as SharedArrayBuffer,
        app: this.spec.app,
        cooperative: this.cooperative,
        faultLimit: this.spec.faultLimit,
        servers: this.spec.servers,
        runJob: this.spec.job && v === 0,
        kernelPage: v,
        pending,
      };
      w.postMessage(start);
    });
  }

  private fromVcpu(msg: FromVcpu): void {
    switch (msg.type) {
      case 'reply': {
        const r = this.inHand.get(msg.id);
        if (!r) return;
        this.inHand.delete(msg.id);
        this.repliesIn[r.vcpu]++;
        if (r.caller) {
          this.outstanding[r.vcpu]--;
          r.caller.resolve({ reply: msg.bytes, hopMs: msg.wokeMs + Math.max(0, epochMs() - msg.at) });
        }
        return;
      }
      case 'fault':
        if (msg.token > 0) {
          if (this.ram.isPresent(msg.pfn))
            this.workers[msg.vcpu].postMessage({ type: 'ready', token: msg.token });
          else {
            const list = this.tokens.get(msg.pfn) ?? [];
            list.push({ vcpu: msg.vcpu, token: msg.token });
            this.tokens.set(msg.pfn, list);
          }
        }
        if (!this.ram.isPresent(msg.pfn)) this.onFault(msg.pfn);
        return;
      case 'paused':
        addStats(this.stats, msg.stats);
        this.pausing?.(msg);
        return;
      case 'resumed':
        this.resuming?.(msg.at);
        return;
      case 'error':
        this.onError(`vCPU ${msg.vcpu}: ${msg.message}`);
        return;
      case 'stats':
        this.statsWaiter?.(msg);
        return;
      case 'started':
        return;
    }
  }

  /**
   * The vCPUs' counters, summed. One collection at a time; a stop ends one early with
   * what had arrived.
   */
  collectStats(): Promise<VcpuStats> {
    const next = this.statsChain.then(() => this.collectOnce());
    this.statsChain = next.catch(() => {});
    return next;
  }

  private collectOnce(): Promise<VcpuStats> {
    const sum = noStats();
    if (this.stopped) return Promise.resolve(sum);
    return new Promise<VcpuStats>((resolve) => {
      let n = 0;
      const done = () => {
        this.statsWaiter = null;
        this.statsStopped = null;
        resolve(sum);
      };
      this.statsStopped = done;
      this.statsWaiter = (r) => {
        addStats(sum, r.stats);
        if (++n === this.workers.length) done();
      };
      for (const w of this.workers) w.postMessage({ type: 'stats' } satisfies ToVcpu);
    });
  }

  /** Pages landed (already installed in RAM and marked present): wake what waited. */
  pagesArrived(runs: number[]): void {
    if (this.tokens.size === 0) return;
    let span = 0;
    for (let i = 1; i < runs.length; i += 2) span += runs[i];
    const wake = (pfn: number) => {
      const list = this.tokens.get(pfn);
      if (!list) return;
      this.tokens.delete(pfn);
      for (const t of list)
        this.workers[t.vcpu].postMessage({ type: 'ready', token: t.token } satisfies ToVcpu);
    };
    if (span <= this.tokens.size) {
      for (let i = 0; i < runs.length; i += 2) for (let p = runs[i]; p < runs[i] + runs[i + 1]; p++) wake(p);
    } else {
      for (const pfn of [...this.tokens.keys()])
        for (let i = 0; i < runs.length; i += 2)
          if (pfn >= runs[i] && pfn < runs[i] + runs[i + 1]) {
            wake(pfn);
            break;
          }
    }
  }

  /** Serves one request (the guest's "NIC"): resolves with the reply. */
  execute(args: Uint8Array[]): Promise<Served> {
    if (!this.running) return Promise.reject(new Error('the VM is not running here'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const v = leastBusy(this.outstanding, this.workers.length, this.rr++);
      this.outstanding[v] = (this.outstanding[v] ?? 0) + 1;
      const req = { id, args };
      this.inHand.set(id, { vcpu: v, req, caller: { resolve, reject } });
      this.workers[v].postMessage({ type: 'request', req, at: epochMs() } satisfies ToVcpu);
    });
  }

  /**
   * Stops the guest at a task boundary on every vCPU and returns what must move with it.
   * Requests in progress are handed back (they run again wherever the guest resumes).
   */
  async pause(): Promise<DeviceState> {
    Atomics.store(this.control, CONTROL_PAUSE, 1);
    // no request is handed in from now on: one posted behind the pause would sit in a
    // vCPU's queue, neither answered nor handed back (the device keeps it instead)
    this.running = false;
    const pending: Request[] = [];
    // a halted vCPU whose every reply has arrived is held where it is; its requests in
    // hand are the ones this side has not heard back on
    const awaited = new Set<number>();
    this.workers.forEach((_, v) => {
      if (this.holdHalted(v)) {
        this.heldInPlace++;
        for (const r of this.inHand.values()) if (r.vcpu === v) pending.push(r.req);
      } else awaited.add(v);
    });
    // every vCPU drops its tasks (what it held is handed back here); the running ones say
    // when they stopped
    const seq = ++this.pauses;
    const stopped = new Promise<void>((resolve) => {
      this.pausing = (r) => {
        // a held vCPU answers too, maybe only during a later pause
        if (r.seq !== seq || !awaited.delete(r.vcpu)) return;
        pending.push(...r.pending);
        if (awaited.size === 0) resolve();
      };
      if (awaited.size === 0) resolve();
    });
    for (const w of this.workers) w.postMessage({ type: 'pause', seq } satisfies ToVcpu);
    await stopped;
    this.pausing = null;
    // the requests handed back run again wherever the guest resumes: their clients hear
    // nothing more from here (they reconnect and send them again)
    this.dropRequests('the guest stopped here');
    return { spec: this.spec, pending: pending.sort((a, b) => a.id - b.id), nextRequestId: this.nextId };
  }

  /**
   * Holds vCPU `v` if it is halted with every reply it posted received here: then nothing
   * of it is in flight, and it runs nothing more until its resume.
   */
  private holdHalted(v: number): boolean {
    if (Atomics.compareExchange(this.control, vcpuStateWord(v), VCPU_HALTED, VCPU_HELD) !== VCPU_HALTED)
      return false;
    // held now, so the count is final: a reply posted before the halt may still be on its way
    return Atomics.load(this.control, vcpuRepliesWord(v)) === this.repliesIn[v];
  }

  /**
   * Runs the guest (again) here from `state`: after a migration was abandoned at the stop,
   * or on the destination at the switchover. Resolves with when the first vCPU ran again
   * (ms since the epoch), NaN if the VM stopped before.
   */
  resume(state: DeviceState): Promise<number> {
    this.nextId = Math.max(this.nextId, state.nextRequestId);
    Atomics.store(this.control, CONTROL_PAUSE, 0);
    this.running = true;
    const resumed = new Promise<number>((resolve) => {
      let first = Number.POSITIVE_INFINITY;
      let n = 0;
      this.resuming = (at) => {
        first = Math.min(first, at);
        if (++n < this.workers.length && !Number.isNaN(at)) return;
        this.resuming = null;
        resolve(Number.isNaN(at) ? Number.NaN : first);
      };
    });
    this.workers.forEach((w, v) => {
      const pending = state.pending.filter((_, i) => i % this.workers.length === v);
      for (const req of pending) this.inHand.set(req.id, { vcpu: v, req });
      w.postMessage({ type: 'resume', cooperative: this.cooperative, pending } satisfies ToVcpu);
    });
    return resumed;
  }

  /** Forgets the requests in hand; their callers hear `reason` (they now run elsewhere, or nowhere). */
  private dropRequests(reason: string): void {
    for (const r of this.inHand.values()) r.caller?.reject(new Error(reason));
    this.inHand.clear();
    this.outstanding.fill(0);
  }

  async stop(): Promise<void> {
    this.running = false;
    this.stopped = true;
    this.statsStopped?.();
    this.resuming?.(Number.NaN);
    Atomics.store(this.control, CONTROL_ABORT, 1);
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.dropRequests('the VM stopped');
  }
}

/**
 * The vCPU a new request goes to, as a kernel wakes a server on an idle CPU: the one with
 * the fewest requests in hand (one whose tasks wait on remote faults keeps them), ties
 * taken in turn from `turn`.
 */
export function leastBusy(outstanding: readonly number[], vcpus: number, turn: number): number {
  let v = turn % vcpus;
  for (let i = 1; i < vcpus; i++) {
    const u = (turn + i) % vcpus;
    if ((outstanding[u] ?? 0) < (outstanding[v] ?? 0)) v = u;
  }
  return v;
}

export function encodeDeviceState(state: DeviceState): Uint8Array {
  const json = JSON.stringify({
    spec: state.spec,
    nextRequestId: state.nextRequestId,
    ramHash: state.ramHash,
    devices: state.devices,
    pending: state.pending.map((r) => ({
      id: r.id,
      args: r.args.map((a) => Buffer.from(a).toString('base64')),
    })),
  });
  return new TextEncoder().encode(json);
}

export function decodeDeviceState(bytes: Uint8Array): DeviceState {
  const o = JSON.parse(new TextDecoder().decode(bytes)) as {
    spec: MachineSpec;
    nextRequestId: number;
    ramHash?: string;
    devices?: unknown;
    pending: { id: number; args: string[] }[];
  };
  return {
    spec: o.spec,
    nextRequestId: o.nextRequestId,
    ramHash: o.ramHash,
    devices: o.devices,
    pending: o.pending.map((r) => ({
      id: r.id,
      args: r.args.map((a) => new Uint8Array(Buffer.from(a, 'base64'))),
    })),
  };
}

export const PAGE = PAGE_SIZE;
