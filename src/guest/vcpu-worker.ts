// A vCPU of a real guest: a worker thread running guest tasks on the shared guest RAM.
// Its run queue, async-fault tokens, the fault limit, halting and waking are the guest
// kernel core's (the simulator's guest uses the same). Server tasks take requests from this
// vCPU's queue and run the app's handler to completion; a job task runs the app's next
// step, then sleeps on a timer. A remote fault either blocks this thread until the page is
// installed, or parks the task (its writes are dropped; it runs again on "page ready").
// Idle, the thread waits for messages: a halted vCPU does not spin.

import { type MessagePort, parentPort } from 'node:worker_threads';
import { PAGE_SIZE } from '../engine/messages.ts';
import type { GuestAccess } from './access.ts';
import { ArrayAccess, PageNotPresent } from './access.ts';
import { GuestKernel } from './kernel.ts';
import { Mmu } from './mmu.ts';
import { GuestRam } from './ram.ts';
import { threadTime, threadTimeSince } from './thread-time.ts';
import {
  CONTROL_ABORT,
  CONTROL_APP_LOCK,
  CONTROL_PAUSE,
  controlWords,
  epochMs,
  type FromVcpu,
  type GuestApp,
  noStats,
  type Rehearsal,
  type Request,
  type ToVcpu,
  VCPU_HALTED,
  VCPU_HELD,
  VCPU_RUNNING,
  type VcpuStats,
  vcpuRepliesWord,
  vcpuStateWord,
} from './vcpu-protocol.ts';

export interface AppModule {
  openApp(kind: string, options: Record<string, unknown>, mem: GuestAccess): GuestApp;
  /** Requests to serve once on scratch RAM, so the app's code is compiled before a VM needs it. */
  rehearsals?(): Rehearsal[];
  formatApp?(kind: string, options: Record<string, unknown>, mem: GuestAccess): void;
}

/** Scratch RAM a rehearsal runs on. */
const REHEARSAL_BYTES = 1 << 20;

/**
 * Serves `mod`'s rehearsals as a VM's requests are served (the task, the kernel, the MMU,
 * the app) on scratch RAM, their replies kept here: the first real request then runs
 * compiled code. A rehearsal that fails only costs its time; the VM's start sets up
 * everything anew.
 */
function rehearse(mod: AppModule): void {
  if (!mod.rehearsals || !mod.formatApp) return;
  for (const r of mod.rehearsals()) {
    try {
      const scratch = GuestRam.create(REHEARSAL_BYTES, true);
      const base = PAGE_SIZE; // the kernel's page first, as in a VM
      mod.formatApp(r.kind, r.options, new ArrayAccess(scratch.bytes.subarray(base)));
      control = new Int32Array(new SharedArrayBuffer(controlWords(1) * 4));
      mmu = new Mmu(scratch, onFault);
      shape = { servers: 1, runJob: false, faultLimit: 64 };
      resetTasks(true);
      app = mod.openApp(r.kind, r.options, mmu.window(base, REHEARSAL_BYTES - base));
      rehearsing = true;
      queue.push(...r.requests.map((args, id) => ({ id, args })));
      assign();
      drain();
    } catch {
      // nothing of it is kept
    } finally {
      rehearsing = false;
      queue.length = 0;
    }
  }
  Object.assign(stats, noStats());
}

/** App modules this thread's script carries built in, by the URL a VM names them with. */
const builtIn = new Map<string, AppModule>();
/** tsx's loader, registered before a module that is not built in (a bundled script has none). */
let loader: string | undefined;

/**
 * For a script bundled with its apps (host/vcpu-bundle.ts): the modules it carries, and
 * where the TypeScript loader is for any other module a VM may name.
 */
export function provideModules(modules: Record<string, AppModule>, tsxLoader: string): void {
  for (const [url, mod] of Object.entries(modules)) builtIn.set(url, mod);
  loader = tsxLoader;
  // a spare thread waits for its VM: it rehearses meanwhile
  for (const mod of builtIn.values()) rehearse(mod);
}

async function openModule(url: string): Promise<AppModule> {
  const mod = builtIn.get(url);
  if (mod) return mod;
  if (loader) {
    const { register } = (await import(loader)) as { register(): void };
    register();
    loader = undefined;
  }
  return (await import(url)) as AppModule;
}

function lockApp(): void {
  while (Atomics.compareExchange(control, CONTROL_APP_LOCK, 0, 1) !== 0)
    Atomics.wait(control, CONTROL_APP_LOCK, 1, 50);
}

function unlockApp(): void {
  Atomics.store(control, CONTROL_APP_LOCK, 0);
  Atomics.notify(control, CONTROL_APP_LOCK, 1);
}

interface Slot {
  req: Request | null;
  job: boolean;
}

const port = parentPort!;
let kernel: GuestKernel;
let mmu: Mmu;
let app: GuestApp;
let control: Int32Array;
let vcpu = 0;
let kernelPage = 0;
const slots: Slot[] = [];
const queue: Request[] = [];
const sleepingServers: number[] = [];
let paused = false;
let stopping = false;
/** When each parked task's fault happened (by token), for `parkedMs`. */
const parkedAt = new Map<number, number>();
const stats: VcpuStats = noStats();

/** When the vCPU last halted (epochMs): a request handed in since then woke it. */
let haltedAt = 0;
/** Each request that woke the vCPU (by id): its wait for the thread to take it, ms. */
const woke = new Map<number, number>();

/** This thread's time on a core and waiting for one, counted from the last resume. */
let schedBase = threadTime();

/** Replies are kept here while the thread rehearses. */
let rehearsing = false;

function post(m: FromVcpu): void {
  if (rehearsing) return;
  port.postMessage(m);
}

/** Where remote faults go (the host's fault thread in postcopy), else the host's loop. */
let faultPort: MessagePort | null = null;

function postFault(pfn: number, token: number): void {
  if (rehearsing) return;
  (faultPort ?? port).postMessage({ type: 'fault', vcpu, pfn, token } satisfies FromVcpu);
}

/** The guest kernel's answer to a remote fault (see Mmu): wait for the page, or park. */
function onFault(pfn: number, kernelContext: boolean): void {
  const action = kernel.fault(0, pfn, kernelContext);
  if (action.action === 'park') {
    stats.asyncFaults++;
    parkedAt.set(action.token, performance.now());
    postFault(pfn, action.token);
    throw new PageNotPresent(pfn);
  }
  stats.syncFaults++;
  postFault(pfn, 0);
  const t0 = performance.now();
  // a blocking fault stalls this whole vCPU; wake up now and then to notice an abandon
  while (!mmu.ram.waitPresent(pfn, 200)) {
    if (Atomics.load(control, CONTROL_ABORT) !== 0)
      throw new Error('the VM stopped while a vCPU waited for a page');
  }
  stats.blockedMs += performance.now() - t0;
  kernel.pageArrived(pfn);
}

function assign(): void {
  while (queue.length > 0 && sleepingServers.length > 0) {
    const t = sleepingServers.shift()!;
    slots[t].req = queue.shift()!;
    kernel.wake(t);
  }
}

/**
 * Runs runnable tasks until none is left, a pause is asked for, or the VM stops; then
 * halts. A vCPU the host held while it was halted runs nothing until its resume.
 */
function drain(): void {
  const state = vcpuStateWord(vcpu);
  if (Atomics.compareExchange(control, state, VCPU_HALTED, VCPU_RUNNING) === VCPU_HELD) return;
  try {
    while (!paused && !stopping) {
      if (Atomics.load(control, CONTROL_PAUSE) !== 0) return;
      const t = kernel.schedule(0);
      if (t < 0) return; // halt: wait for a message
      runTask(t);
    }
  } finally {
    // every reply of this run is posted (and counted) before the host can see the halt
    Atomics.store(control, state, VCPU_HALTED);
    haltedAt = epochMs();
  }
}

function runTask(t: number): void {
  const slot = slots[t];
  lockApp();
  try {
    if (slot.job) {
      const delay = app.step!();
      mmu.commit();
      stats.ops++;
      kernel.sleep(0);
      const gen = generation;
      setTimeout(() => {
        if (gen !== generation) return;
        kernel.wake(t);
        drain();
      }, delay);
      return;
    }
    const req = slot.req!;
    // the kernel stages the request in its own page: a fault there always blocks
    mmu.touchAsKernel(kernelPage);
    let bytes: Uint8Array;
    try {
      bytes = app.execute!(req.args);
      mmu.commit();
    } catch (e) {
      if (e instanceof PageNotPresent || !app.failed) throw e;
      // a request the app could not serve: nothing it wrote stays, the client gets its error
      mmu.abort();
      bytes = app.failed(e as Error);
    }
    stats.ops++;
    Atomics.add(control, vcpuRepliesWord(vcpu), 1);
    post({ type: 'reply', id: req.id, bytes, wokeMs: woke.get(req.id) ?? 0, at: epochMs() });
    woke.delete(req.id);
    slot.req = null;
    const next = queue.shift();
    if (next) slot.req = next;
    else {
      kernel.sleep(0);
      sleepingServers.push(t);
    }
  } catch (e) {
    mmu.abort();
    if (e instanceof PageNotPresent) return; // parked by onFault: runs again on "page ready"
    throw e;
  } finally {
    unlockApp();
  }
}

/** Requests not yet answered: they go with the VM's device state. */
function pendingRequests(): Request[] {
  const out: Request[] = [];
  for (const s of slots) if (s.req) out.push(s.req);
  out.push(...queue.splice(0));
  return out.sort((a, b) => a.id - b.id);
}

let shape = { servers: 0, runJob: false, faultLimit: 64 };
/** Bumped whenever the tasks are rebuilt, so a stale job timer does nothing. */
let generation = 0;

/** All servers idle, the job (if any) runnable, no fault outstanding. */
function resetTasks(cooperative: boolean): void {
  generation++;
  kernel = new GuestKernel({ vcpus: 1, cooperative, maxAsyncFaults: shape.faultLimit });
  parkedAt.clear(); // a new kernel hands out its tokens anew
  slots.length = 0;
  sleepingServers.length = 0;
  for (let i = 0; i < shape.servers; i++) {
    const t = kernel.addTask(0, 'sleeping');
    slots[t] = { req: null, job: false };
    sleepingServers.push(t);
  }
  if (shape.runJob) slots[kernel.addTask(0, 'runnable')] = { req: null, job: true };
}

async function onMessage(m: ToVcpu): Promise<void> {
  try {
    switch (m.type) {
      case 'start': {
        vcpu = m.vcpu;
        kernelPage = m.kernelPage;
        control = new Int32Array(m.control);
        const ram = new GuestRam(m.ram);
        mmu = new Mmu(ram, onFault);
        shape = { servers: m.servers, runJob: m.runJob, faultLimit: m.faultLimit };
        resetTasks(m.cooperative);
        const mod = await openModule(m.app.module);
        app = mod.openApp(m.app.kind, m.app.options, mmu.window(m.app.base, m.app.size));
        queue.push(...m.pending);
        assign();
        post({ type: 'started', vcpu });
        drain();
        return;
      }
      case 'request':
        if (m.at >= haltedAt) woke.set(m.req.id, Math.max(0, epochMs() - m.at));
        queue.push(m.req);
        assign();
        drain();
        return;
      case 'ready': {
        const since = parkedAt.get(m.token);
        // a late "page ready" for a task a pause has since handed back (it came on the
        // fault thread's port, unordered with the pause): that request runs elsewhere now
        if (since === undefined) return;
        stats.parkedMs += performance.now() - since;
        parkedAt.delete(m.token);
        kernel.ready(m.token);
        drain();
        return;
      }
      case 'faults':
        // New faults go there from now on; "page ready" comes back on it. The old port stays
        // open for the answers still due on it (the other end closes it): which of two ports
        // a thread hears first is not ordered, so closing it here could drop a wake-up.
        faultPort = m.port;
        faultPort?.on('message', (r: ToVcpu) => void onMessage(r));
        return;
      case 'pause': {
        paused = true;
        // requests in progress or parked start over wherever the guest runs next
        const pending = pendingRequests();
        woke.clear(); // handed back: the next host hands them in anew
        resetTasks(kernel.options.cooperative);
        post({ type: 'paused', vcpu, seq: m.seq, pending, stats: { ...stats } });
        return;
      }
      case 'resume':
        paused = false;
        Atomics.store(control, vcpuStateWord(vcpu), VCPU_HALTED); // let go of a hold
        post({ type: 'resumed', vcpu, at: epochMs() });
        schedBase = threadTime();
        kernel.setCooperative(m.cooperative);
        queue.push(...m.pending);
        assign();
        drain();
        return;
      case 'stats': {
        const { runMs, waitMs } = threadTimeSince(schedBase);
        post({ type: 'stats', vcpu, stats: { ...stats, runMs, waitMs } });
        return;
      }
      case 'stop':
        stopping = true;
        faultPort?.close();
        port.close();
        return;
    }
  } catch (e) {
    post({ type: 'error', vcpu, message: (e as Error).stack ?? String(e) });
  }
}

port.on('message', (m: ToVcpu) => void onMessage(m));
