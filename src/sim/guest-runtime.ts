// The simulated guest at work: vCPUs running workload tasks in virtual time, scheduled
// by the shared guest kernel core. An operation is CPU time spread over page touches;
// the runtime only stops where something happens (a touch of a page that is missing
// during postcopy, the end of the operation, the end of a time slice), so a request costs
// one event unless it faults. Remote faults follow the kernel's rules: a blocking fault
// stalls the vCPU until the page lands; a cooperative one parks the task under a token and
// the vCPU runs another, paying the host's extra work and a context switch.

import { GuestKernel } from '../guest/kernel.ts';
import type { VcpuBin } from '../report/schema.ts';
import type { EventQueue } from './event-queue.ts';
import type { Rng } from './rng.ts';
import type { Operation, WorkloadModel } from './workloads.ts';

/** How the running guest reaches pages while they are still moving. */
export interface PagePort {
  present(pfn: number): boolean;
  /** A remote fault on `pfn`: ask for the page (requests for the same page are merged). */
  request(pfn: number): void;
}

export interface RuntimeCosts {
  /** Scheduler time slice, ms. */
  sliceMs: number;
  /** Guest context switch, ms. */
  contextSwitchMs: number;
  /**
   * What an async fault costs its vCPU beyond the request's own work, ms of vCPU time: the
   * exit to the host, its not-present and ready injections. Slowed by `cpuFactor` like the
   * rest of the guest's work. (A blocking fault's wake-up is the VM's `faultWakeUs`.)
   */
  asyncFaultMs: number;
}

export const DEFAULT_COSTS: RuntimeCosts = { sliceMs: 4, contextSwitchMs: 0.005, asyncFaultMs: 0.01 };

const BIN_MS = 100;
const EPS = 1e-9;

interface TaskRun {
  cls: number;
  op: Operation | null;
  /** Next boundary: touch index, or op.pages.length for the end. */
  at: number;
  /** CPU ms left before that boundary. */
  segLeft: number;
  seg: number;
  /** When the operation's request arrived (server) or the operation started (loop). */
  since: number;
  client: number;
}

interface Plan {
  start: number;
  /** Boundary where the plan stops, and whether it gets there (else the slice ends first). */
  stopAt: number;
  reaches: boolean;
  duration: number;
}

type VState = 'busy' | 'halted' | 'blocked' | 'paused';

export class GuestRuntime {
  readonly kernel: GuestKernel;
  private readonly tasks: TaskRun[] = [];
  private readonly plans: (Plan | null)[];
  private readonly versions: number[];
  private readonly sliceStart: number[];
  private readonly vstate: VState[];
  private readonly vsince: number[];
  /** Requests that arrived and wait for a server task. */
  private readonly queued: { client: number; at: number }[] = [];
  private readonly sleepingServers: number[] = [];
  /** One callback per client and per loop task, made once: events reuse them. */
  private readonly senders: (() => void)[] = [];
  private readonly resumers: (() => void)[] = [];
  private readonly thinkers: (() => void)[] = [];
  private readonly arrivals: (() => void)[] = [];
  /**
   * Carries a reply of `bytes` to client `client` and calls `delivered` when it got there
   * (the world sends it out of the VM's current host); unset, replies arrive at once.
   */
  replies: ((client: number, bytes: number, delivered: () => void) => void) | null = null;
  /**
   * Carries a request of client `client` into the VM's current host and calls `arrived`
   * when it got there; unset, requests arrive once they have crossed the path.
   */
  requests: ((client: number, arrived: () => void) => void) | null = null;
  private readonly waiters = new Map<number, { vcpu: number; token: number }[]>();
  private port: PagePort | null = null;
  private paused = false;
  private stopped = false;
  /** Metrics: completed ops and latencies per 100 ms bin, vCPU time per bin. */
  readonly opsPerBin: number[] = [];
  readonly latencyPerBin: number[][] = [];
  readonly vcpuBins: VcpuBin[] = [];
  blockedMs = 0;
  /** Work takes this many times as long (>1 while the host's CPUs also serve a migration). */
  cpuFactor = 1;
  /** The clients' way through the hosts takes this many times as long (same reason). */
  pathFactor = 1;
  /** The task holding the app lock (see WorkloadModel.appLock), or -1. */
  private lockHolder = -1;
  /** vCPUs waiting for the app lock, each with the task it picked. */
  private readonly lockWaiters: number[] = [];

  constructor(
    readonly model: WorkloadModel,
    vcpus: number,
    asyncFaultLimit: number,
    private readonly queue: EventQueue,
    private readonly rng: Rng,
    /** Pages written while the guest runs on the source (its dirty log). */
    private readonly onWrite: (pfn: number) => void,
    private readonly costs: RuntimeCosts = DEFAULT_COSTS,
  ) {
    // the migration decides whether faults are cooperative; the kernel supports both
    this.kernel = new GuestKernel({ vcpus, cooperative: true, maxAsyncFaults: asyncFaultLimit });
    this.plans = new Array(vcpus).fill(null);
    this.versions = new Array(vcpus).fill(0);
    this.sliceStart = new Array(vcpus).fill(0);
    this.vstate = new Array(vcpus).fill('halted');
    this.vsince = new Array(vcpus).fill(0);
    let next = 0;
    model.tasks.forEach((cls, c) => {
      for (let i = 0; i < cls.count; i++) {
        // servers wait for requests; loop tasks start working at once
        const id = this.kernel.addTask(next++ % vcpus, cls.role === 'server' ? 'sleeping' : 'runnable');
        this.tasks[id] = { cls: c, op: null, at: 0, segLeft: 0, seg: 0, since: 0, client: -1 };
        if (cls.role === 'server') this.sleepingServers.push(id);
        this.resumers[id] = () => {
          if (this.stopped) return;
          this.beginOp(id);
          const kick = this.kernel.wake(id);
          if (kick >= 0) this.run(kick);
        };
      }
    });
    const connections = model.clients?.connections ?? 0;
    for (let c = 0; c < connections; c++) {
      this.senders.push(() => this.send(c));
      this.arrivals.push(() => this.arrive(c));
      this.thinkers.push(() => this.think(c));
    }
  }

  /** Starts the workload: servers wait for requests, loop tasks start working, clients connect. */
  start(): void {
    const now = this.queue.now;
    for (let v = 0; v < this.kernel.vcpus; v++) this.vsince[v] = now;
    for (let t = 0; t < this.tasks.length; t++) {
      const cls = this.model.tasks[this.tasks[t].cls];
      if (cls.role === 'loop') this.beginOp(t);
    }
    const clients = this.model.clients;
    if (clients) for (let c = 0; c < clients.connections; c++) this.think(c);
    for (let v = 0; v < this.kernel.vcpus; v++) this.run(v);
  }

  /** The guest stops: the source pauses it for the switchover. */
  pause(): void {
    if (this.paused) return;
    const now = this.queue.now;
    for (let v = 0; v < this.kernel.vcpus; v++) {
      this.cancel(v, now);
      this.setState(v, 'paused', now);
    }
    this.paused = true;
  }

  /** The guest runs again; with a port, pages may be missing (postcopy on the destination). */
  resume(port: PagePort | null): void {
    this.port = port;
    if (!this.paused) return;
    this.paused = false;
    const now = this.queue.now;
    for (let v = 0; v < this.kernel.vcpus; v++) {
      this.setState(v, this.kernel.vcpuState(v) === 'blocked' ? 'blocked' : 'halted', now);
      this.run(v);
    }
  }

  /** Every page is local again. */
  settle(): void {
    this.port = null;
  }

  /** Ends the run: flush the vCPU accounting. */
  stop(): void {
    const now = this.queue.now;
    for (let v = 0; v < this.kernel.vcpus; v++) this.setState(v, 'paused', now);
    this.stopped = true;
  }

  /** Host time from a page's arrival to its waiters running again, ms. */
  wakeDelayMs = 0;

  /** Pages landed on the destination: wake what waited on them (after the wake delay). */
  arrived(runs: number[]): void {
    if (this.waiters.size === 0) return;
    const awaited = this.awaitedIn(runs);
    if (awaited.length === 0) return;
    if (this.wakeDelayMs > 0) this.queue.after(this.wakeDelayMs, () => this.wakeAll(awaited));
    else this.wakeAll(awaited);
  }

  /** The pages among `runs` something waits on: walk whichever is smaller, runs or waiters. */
  private awaitedIn(runs: number[]): number[] {
    const out: number[] = [];
    let span = 0;
    for (let i = 1; i < runs.length; i += 2) span += runs[i];
    if (span <= this.waiters.size) {
      for (let i = 0; i < runs.length; i += 2)
        for (let p = runs[i]; p < runs[i] + runs[i + 1]; p++) if (this.waiters.has(p)) out.push(p);
    } else {
      for (const pfn of this.waiters.keys())
        for (let i = 0; i < runs.length; i += 2)
          if (pfn >= runs[i] && pfn < runs[i] + runs[i + 1]) {
            out.push(pfn);
            break;
          }
    }
    return out;
  }

  private wakeAll(pfns: number[]): void {
    for (const pfn of pfns) this.wakeWaiters(pfn);
  }

  private wakeWaiters(pfn: number): void {
    const list = this.waiters.get(pfn);
    if (!list) return;
    this.waiters.delete(pfn);
    for (const w of list) {
      if (w.token > 0) {
        const kick = this.kernel.ready(w.token);
        if (kick >= 0) this.run(kick);
      } else {
        for (const v of this.kernel.pageArrived(pfn)) {
          this.setState(v, 'busy', this.queue.now);
          this.run(v);
        }
      }
    }
  }

  // --- clients and operations ---------------------------------------------------------

  private think(client: number): void {
    const { thinkMs, pathMs } = this.model.clients!;
    // the host path runs on host CPUs: a migration's load slows it (see SimMigration)
    const ms = (thinkMs > 0 ? this.rng.exp(thinkMs) : 0) + pathMs * this.pathFactor;
    if (ms > 0) this.queue.after(ms, this.senders[client]);
    else this.send(client);
  }

  private send(client: number): void {
    if (this.stopped) return;
    if (this.requests) this.requests(client, this.arrivals[client]);
    else this.arrive(client);
  }

  private arrive(client: number): void {
    if (this.stopped) return;
    this.queued.push({ client, at: this.queue.now });
    this.dispatch();
  }

  /** Hands queued requests to sleeping server tasks, idle vCPUs first. */
  private dispatch(): void {
    while (this.queued.length > 0 && this.sleepingServers.length > 0) {
      let pick = this.sleepingServers.length - 1;
      for (let i = 0; i < this.sleepingServers.length; i++) {
        const v = this.kernel.vcpuOf(this.sleepingServers[i]);
        if (this.kernel.vcpuState(v) === 'halted') {
          pick = i;
          break;
        }
      }
      const t = this.sleepingServers.splice(pick, 1)[0];
      const r = this.queued.shift()!;
      this.beginOp(t, r.at, r.client);
      const kick = this.kernel.wake(t);
      if (kick >= 0) this.run(kick);
    }
  }

  private beginOp(t: number, since = this.queue.now, client = -1): void {
    const task = this.tasks[t];
    const op = this.model.tasks[task.cls].next(this.rng, this.port !== null);
    task.op = op;
    task.at = 0;
    task.seg = (op.cpuMs * this.cpuFactor) / (op.pages.length + 1);
    task.segLeft = task.seg;
    task.since = since;
    task.client = client;
  }

  private finishOp(v: number, t: number): void {
    if (this.lockHolder === t) this.releaseLock();
    const now = this.queue.now;
    const task = this.tasks[t];
    const cls = this.model.tasks[task.cls];
    // throughput is what clients get when there are clients (not the log writer's flushes)
    if (cls.role === 'server' || !this.model.clients) {
      const bin = Math.floor(now / BIN_MS);
      while (this.opsPerBin.length <= bin) {
        this.opsPerBin.push(0);
        this.latencyPerBin.push([]);
      }
      this.opsPerBin[bin]++;
      this.latencyPerBin[bin].push(now - task.since);
    }
    const replyBytes = task.op?.replyBytes ?? 0;
    task.op = null;
    if (cls.role === 'server') {
      // the client thinks once it has the reply
      if (task.client >= 0) {
        if (replyBytes > 0 && this.replies) this.replies(task.client, replyBytes, this.thinkers[task.client]);
        else this.think(task.client);
      }
      const r = this.queued.shift();
      if (r) {
        this.beginOp(t, r.at, r.client);
        return;
      }
      this.kernel.sleep(v);
      this.sleepingServers.push(t);
      return;
    }
    if (cls.pauseMs > 0) {
      this.kernel.sleep(v);
      this.queue.after(cls.pauseMs, this.resumers[t]);
      return;
    }
    this.beginOp(t);
  }

  // --- the vCPU loop ------------------------------------------------------------------

  /** Lets an idle vCPU pick work; does nothing when it is busy, blocked or paused. */
  private run(v: number, delay = 0): void {
    if (this.paused || this.stopped || this.plans[v]) return;
    if (this.kernel.vcpuState(v) === 'blocked') {
      this.setState(v, 'blocked', this.queue.now);
      return;
    }
    const before = this.kernel.running(v);
    const t = this.kernel.schedule(v);
    const now = this.queue.now;
    if (t < 0) {
      // work charged to this vCPU (the host's async-fault injection) still takes its time
      if (delay > 0) this.setState(v, 'busy', now);
      this.setState(v, 'halted', now + delay);
      return;
    }
    if (this.needsLock(t)) {
      if (this.lockHolder >= 0 && this.lockHolder !== t) {
        // the vCPU's thread waits in the lock with task t picked: it runs nothing else
        if (!this.lockWaiters.includes(v)) this.lockWaiters.push(v);
        this.setState(v, 'halted', now);
        return;
      }
      this.lockHolder = t;
    }
    if (before !== t) {
      this.sliceStart[v] = now;
      delay += this.costs.contextSwitchMs;
    }
    this.setState(v, 'busy', now);
    this.plan(v, t, delay);
  }

  /** Schedules the next stop of task t on vCPU v: a missing page, the op's end, or the slice end. */
  private plan(v: number, t: number, delay: number): void {
    const task = this.tasks[t];
    const op = task.op!;
    const n = op.pages.length;
    let time = task.segLeft;
    let at = task.at;
    if (this.port) {
      while (at < n && this.port.present(op.pages[at])) {
        time += task.seg;
        at++;
      }
    } else {
      time += task.seg * (n - at);
      at = n;
    }
    const now = this.queue.now;
    const sliceLeft = this.sliceStart[v] + this.costs.sliceMs - now;
    // a slice only ends early when another task could use the vCPU (a handler holding the
    // app lock runs to its end, as a request handler does)
    const contended = sliceLeft < time && this.kernel.hasRunnable(v) && this.lockHolder !== t;
    const duration = contended ? Math.max(sliceLeft, 0) : time;
    const plan: Plan = { start: now + delay, stopAt: at, reaches: !contended, duration };
    this.plans[v] = plan;
    const version = ++this.versions[v];
    this.queue.at(now + delay + duration, () => this.stopPoint(v, t, version));
  }

  private stopPoint(v: number, t: number, version: number): void {
    if (version !== this.versions[v]) return;
    const plan = this.plans[v]!;
    this.plans[v] = null;
    const task = this.tasks[t];
    const op = task.op!;
    if (!plan.reaches) {
      this.advance(task, plan.duration);
      if (this.kernel.preempt(v)) this.run(v);
      else {
        this.sliceStart[v] = this.queue.now;
        this.run(v);
      }
      return;
    }
    // the plan lasted exactly until the stop boundary: every touch before it is done
    this.passTo(task, plan.stopAt);
    if (plan.stopAt >= op.pages.length) {
      this.finishOp(v, t);
      this.run(v);
      return;
    }
    const pfn = op.pages[plan.stopAt];
    if (!this.port || this.port.present(pfn)) {
      this.run(v); // the page landed meanwhile
      return;
    }
    this.port.request(pfn);
    const kernelContext =
      this.model.kernelFaultFraction > 0 && this.rng.next() < this.model.kernelFaultFraction;
    const action = this.kernel.fault(v, pfn, kernelContext);
    const list = this.waiters.get(pfn) ?? [];
    this.waiters.set(pfn, list);
    if (action.action === 'block') {
      list.push({ vcpu: v, token: 0 });
      this.setState(v, 'blocked', this.queue.now);
      return;
    }
    list.push({ vcpu: v, token: action.token });
    if (this.model.restartOnPark) {
      // what it did so far is lost: it will touch (and pay for) every page again
      task.at = 0;
      task.segLeft = task.seg;
    }
    // the parked handler lets the app lock go (it runs again once the page is here)
    if (this.lockHolder === t) this.releaseLock();
    this.run(v, this.costs.asyncFaultMs * this.cpuFactor);
  }

  private needsLock(t: number): boolean {
    return this.model.appLock === true && this.model.tasks[this.tasks[t].cls].role === 'server';
  }

  private releaseLock(): void {
    this.lockHolder = -1;
    for (const v of this.lockWaiters.splice(0)) this.run(v);
  }

  /** Moves a task forward by `ms` of CPU time through boundaries it is known to pass. */
  private advance(task: TaskRun, ms: number): void {
    const op = task.op!;
    let left = ms;
    while (left >= task.segLeft - EPS && task.at < op.pages.length) {
      left -= task.segLeft;
      this.touch(task, task.at);
      task.at++;
      task.segLeft = task.seg;
    }
    task.segLeft = Math.max(0, task.segLeft - Math.max(0, left));
  }

  /** Puts the task exactly at boundary `at` (all touches before it done). */
  private passTo(task: TaskRun, at: number): void {
    while (task.at < at) {
      this.touch(task, task.at);
      task.at++;
    }
    task.segLeft = 0;
  }

  private touch(task: TaskRun, i: number): void {
    const op = task.op!;
    if (i >= op.pages.length - op.writes && !this.port && !this.paused) this.onWrite(op.pages[i]);
  }

  /** Cancels vCPU v's plan, keeping the progress made until `now`. */
  private cancel(v: number, now: number): void {
    const plan = this.plans[v];
    if (!plan) return;
    this.versions[v]++;
    this.plans[v] = null;
    const t = this.kernel.running(v);
    if (t >= 0) this.advance(this.tasks[t], Math.max(0, now - plan.start));
  }

  private setState(v: number, s: VState, now: number): void {
    const prev = this.vstate[v];
    if (prev === s) return;
    const from = this.vsince[v];
    if (prev !== 'paused' && now > from) this.account(prev, from, now);
    this.vstate[v] = s;
    this.vsince[v] = now;
  }

  private account(s: VState, from: number, to: number): void {
    if (s === 'blocked') this.blockedMs += to - from;
    let t = from;
    while (t < to) {
      const bin = Math.floor(t / BIN_MS);
      const end = Math.min(to, (bin + 1) * BIN_MS);
      while (this.vcpuBins.length <= bin)
        this.vcpuBins.push({ tMs: this.vcpuBins.length * BIN_MS, busyMs: 0, haltedMs: 0, blockedMs: 0 });
      const b = this.vcpuBins[bin];
      if (s === 'busy') b.busyMs += end - t;
      else if (s === 'halted') b.haltedMs += end - t;
      else b.blockedMs += end - t;
      t = end;
    }
  }
}
