// The guest kernel's bookkeeping, written once for both worlds: per-vCPU run queues,
// remote faults taken as blocking or as async (not-present / ready with a token), the
// limit on outstanding async faults, halting and waking. Sans-IO: the simulated guest
// drives it in virtual time, the real guest from its vCPU workers; neither reads a clock
// here. Tasks are small integers; the driver keeps what a task is doing.
//
// The rules (DESIGN.md, semantics 4): a blocking fault stalls the whole vCPU until the
// page arrives. A cooperative fault parks only the faulting task under a token and the
// vCPU runs another runnable task; "ready" with that token makes it runnable again. A
// vCPU with nothing runnable halts until something wakes. At most `maxAsyncFaults`
// async faults are outstanding per vCPU (beyond that a fault blocks), and faults taken in
// guest-kernel context always block.

export type TaskState = 'runnable' | 'running' | 'parked' | 'sleeping';
export type VcpuState = 'running' | 'halted' | 'blocked';

export interface KernelOptions {
  vcpus: number;
  /** Take remote faults as async page faults (true) or block the vCPU (false). */
  cooperative: boolean;
  /** Outstanding async faults per vCPU before faults block (KVM: 64). */
  maxAsyncFaults: number;
}

/** What the vCPU must do after a remote fault. */
export type FaultAction =
  /** Stall this vCPU until `pageArrived(pfn)`; the task stays current. */
  | { action: 'block'; reason: 'blocking-mode' | 'kernel-context' | 'limit' }
  /** The task is parked under `token`; schedule another (or halt). */
  | { action: 'park'; token: number };

export class KernelError extends Error {}

interface Parked {
  task: number;
  pfn: number;
}

export class GuestKernel {
  readonly vcpus: number;
  private readonly taskVcpu: number[] = [];
  private readonly taskState: TaskState[] = [];
  /** Runnable tasks per vCPU, in the order they will run. */
  private readonly runQueues: number[][];
  private readonly current: number[];
  private readonly blockedOn: number[];
  private readonly asyncOut: number[];
  private readonly parked = new Map<number, Parked>();
  private nextToken = 1;
  /** Counters for reports. */
  asyncFaults = 0;
  syncFaults = 0;

  /** The host offers async page faults (or not) for the migration at hand. */
  setCooperative(on: boolean): void {
    this.options.cooperative = on;
  }

  constructor(readonly options: KernelOptions) {
    if (!(Number.isInteger(options.vcpus) && options.vcpus >= 1))
      throw new KernelError(`vcpus ${options.vcpus}`);
    this.vcpus = options.vcpus;
    this.runQueues = Array.from({ length: this.vcpus }, () => []);
    this.current = new Array(this.vcpus).fill(-1);
    this.blockedOn = new Array(this.vcpus).fill(-1);
    this.asyncOut = new Array(this.vcpus).fill(0);
  }

  get taskCount(): number {
    return this.taskState.length;
  }

  /**
   * Adds a task on `vcpu` (default: round robin), runnable or sleeping until `wake`;
   * returns its id.
   */
  addTask(vcpu = this.taskState.length % this.vcpus, state: 'runnable' | 'sleeping' = 'runnable'): number {
    if (!(vcpu >= 0 && vcpu < this.vcpus)) throw new KernelError(`no vCPU ${vcpu}`);
    const id = this.taskState.length;
    this.taskVcpu.push(vcpu);
    this.taskState.push(state);
    if (state === 'runnable') this.runQueues[vcpu].push(id);
    return id;
  }

  /** Whether another task waits to run on `vcpu` (a time slice only ends for it). */
  hasRunnable(vcpu: number): boolean {
    return this.runQueues[vcpu].length > 0;
  }

  vcpuOf(task: number): number {
    return this.taskVcpu[task];
  }

  stateOf(task: number): TaskState {
    return this.taskState[task];
  }

  /** The task running on `vcpu`, or -1. */
  running(vcpu: number): number {
    return this.current[vcpu];
  }

  vcpuState(vcpu: number): VcpuState {
    if (this.blockedOn[vcpu] >= 0) return 'blocked';
    return this.current[vcpu] >= 0 ? 'running' : 'halted';
  }

  /** Page a blocked vCPU waits for, or -1. */
  blockedPage(vcpu: number): number {
    return this.blockedOn[vcpu];
  }

  outstandingAsync(vcpu: number): number {
    return this.asyncOut[vcpu];
  }

  /**
   * Picks the next task for an idle vCPU: the head of its run queue, or -1 (the vCPU
   * halts). A blocked vCPU runs nothing.
   */
  schedule(vcpu: number): number {
    if (this.blockedOn[vcpu] >= 0) return -1;
    if (this.current[vcpu] >= 0) return this.current[vcpu];
    const next = this.runQueues[vcpu].shift();
    if (next === undefined) return -1;
    this.taskState[next] = 'running';
    this.current[vcpu] = next;
    return next;
  }

  /** Time slice over: the running task goes to the back of the queue if others wait. */
  preempt(vcpu: number): boolean {
    const t = this.current[vcpu];
    if (t < 0 || this.blockedOn[vcpu] >= 0 || this.runQueues[vcpu].length === 0) return false;
    this.taskState[t] = 'runnable';
    this.runQueues[vcpu].push(t);
    this.current[vcpu] = -1;
    return true;
  }

  /** The running task waits for work (an empty request queue); the vCPU is free. */
  sleep(vcpu: number): void {
    const t = this.current[vcpu];
    if (t < 0) throw new KernelError(`vCPU ${vcpu} has no running task to put to sleep`);
    this.taskState[t] = 'sleeping';
    this.current[vcpu] = -1;
  }

  /** Work arrived for a sleeping task. Returns its vCPU when that vCPU was idle (kick it). */
  wake(task: number): number {
    if (this.taskState[task] !== 'sleeping') return -1;
    return this.makeRunnable(task);
  }

  /** The running task on `vcpu` touched a page that is not here yet. */
  fault(vcpu: number, pfn: number, kernelContext: boolean): FaultAction {
    const t = this.current[vcpu];
    if (t < 0) throw new KernelError(`remote fault on vCPU ${vcpu} with no running task`);
    let reason: 'blocking-mode' | 'kernel-context' | 'limit' | undefined;
    if (!this.options.cooperative) reason = 'blocking-mode';
    else if (kernelContext) reason = 'kernel-context';
    else if (this.asyncOut[vcpu] >= this.options.maxAsyncFaults) reason = 'limit';
    if (reason) {
      this.blockedOn[vcpu] = pfn;
      this.syncFaults++;
      return { action: 'block', reason };
    }
    const token = this.nextToken++;
    this.parked.set(token, { task: t, pfn });
    this.asyncOut[vcpu]++;
    this.asyncFaults++;
    this.taskState[t] = 'parked';
    this.current[vcpu] = -1;
    return { action: 'park', token };
  }

  /**
   * "Page ready" for `token`: the parked task is runnable again. Returns the vCPU to kick
   * when it was idle, -1 otherwise. An unknown token is an error, never a silent wake.
   */
  ready(token: number): number {
    const p = this.parked.get(token);
    if (!p) throw new KernelError(`page ready with unknown token ${token}`);
    this.parked.delete(token);
    this.asyncOut[this.taskVcpu[p.task]]--;
    return this.makeRunnable(p.task);
  }

  /** Tokens parked on `pfn` (the host sends "ready" for each when the page lands). */
  tokensFor(pfn: number): number[] {
    const out: number[] = [];
    for (const [token, p] of this.parked) if (p.pfn === pfn) out.push(token);
    return out;
  }

  /** A page arrived: vCPUs blocked on it resume their task. Returns those vCPUs. */
  pageArrived(pfn: number): number[] {
    const out: number[] = [];
    for (let v = 0; v < this.vcpus; v++)
      if (this.blockedOn[v] === pfn) {
        this.blockedOn[v] = -1;
        out.push(v);
      }
    return out;
  }

  private makeRunnable(task: number): number {
    const v = this.taskVcpu[task];
    this.taskState[task] = 'runnable';
    this.runQueues[v].push(task);
    return this.current[v] < 0 && this.blockedOn[v] < 0 ? v : -1;
  }
}
