// The guest kernel core on its own: run queues, blocking and cooperative remote faults,
// the per-vCPU async-fault limit, halting and waking (DESIGN.md, semantics 4). The model
// test drives random operation sequences against a plain reference model of the rules.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { type FaultAction, GuestKernel, KernelError, type TaskState } from '../../src/guest/kernel.ts';

function kernel(vcpus: number, cooperative: boolean, maxAsyncFaults = 64): GuestKernel {
  return new GuestKernel({ vcpus, cooperative, maxAsyncFaults });
}

function parkToken(a: FaultAction): number {
  assert.equal(a.action, 'park', `expected the task to park, got ${JSON.stringify(a)}`);
  return (a as { token: number }).token;
}

test('a blocked vCPU runs nothing; its other runnable tasks wait', () => {
  const k = kernel(2, false);
  const a = k.addTask(0);
  const b = k.addTask(0);
  const c = k.addTask(1);
  assert.equal(k.schedule(0), a);
  assert.deepEqual(k.fault(0, 7, false), { action: 'block', reason: 'blocking-mode' });
  assert.equal(k.vcpuState(0), 'blocked');
  assert.equal(k.blockedPage(0), 7);
  assert.equal(k.running(0), a, 'the faulting task stays current on a blocked vCPU');
  assert.equal(k.stateOf(a), 'running');
  for (let i = 0; i < 3; i++) assert.equal(k.schedule(0), -1, 'a blocked vCPU schedules nothing');
  assert.equal(k.preempt(0), false, 'a blocked vCPU is not preempted');
  assert.equal(k.stateOf(b), 'runnable');
  assert.equal(k.hasRunnable(0), true);
  // the other vCPU is unaffected
  assert.equal(k.vcpuState(1), 'halted');
  assert.equal(k.schedule(1), c);
  assert.equal(k.vcpuState(1), 'running');
});

test('pageArrived(pfn) unblocks exactly the vCPUs blocked on that pfn', () => {
  const k = kernel(4, false);
  const tasks = [0, 1, 2, 3].map((v) => k.addTask(v));
  for (let v = 0; v < 4; v++) assert.equal(k.schedule(v), tasks[v]);
  k.fault(0, 10, false);
  k.fault(1, 11, true);
  k.fault(2, 10, false);
  assert.deepEqual(k.pageArrived(99), [], 'a page nobody waits for unblocks nothing');
  assert.deepEqual(k.pageArrived(11), [1]);
  assert.equal(k.vcpuState(0), 'blocked');
  assert.equal(k.vcpuState(1), 'running');
  assert.equal(k.vcpuState(2), 'blocked');
  assert.deepEqual(k.pageArrived(10), [0, 2], 'every vCPU blocked on the page resumes');
  assert.deepEqual(k.pageArrived(10), [], 'a second arrival wakes nobody');
  for (let v = 0; v < 4; v++) {
    assert.equal(k.vcpuState(v), 'running');
    assert.equal(k.schedule(v), tasks[v], 'the faulting task continues where it stopped');
    assert.equal(k.blockedPage(v), -1);
  }
});

test('wake and ready do not kick a blocked vCPU; the woken task waits until the page arrives', () => {
  const k = kernel(1, true, 64);
  const a = k.addTask(0);
  const s = k.addTask(0, 'sleeping');
  const b = k.addTask(0);
  assert.equal(k.schedule(0), a);
  const tok = parkToken(k.fault(0, 1, false));
  assert.equal(k.schedule(0), b);
  assert.deepEqual(k.fault(0, 2, true), { action: 'block', reason: 'kernel-context' });
  assert.equal(k.wake(s), -1, 'no kick: the vCPU is blocked');
  assert.equal(k.ready(tok), -1, 'no kick: the vCPU is blocked');
  assert.equal(k.stateOf(s), 'runnable');
  assert.equal(k.stateOf(a), 'runnable');
  assert.equal(k.schedule(0), -1);
  assert.deepEqual(k.pageArrived(2), [0]);
  assert.equal(k.schedule(0), b, 'the blocked task resumes before the queue');
  assert.equal(k.preempt(0), true);
  assert.deepEqual([k.schedule(0), k.preempt(0), k.schedule(0)], [s, true, a], 'then the queue in order');
});

test('a vCPU with nothing runnable halts; ready(token) returns it so the driver can kick it', () => {
  const k = kernel(2, true);
  const a = k.addTask(1);
  assert.equal(k.vcpuState(0), 'halted', 'a vCPU without tasks is halted');
  assert.equal(k.schedule(1), a);
  const tok = parkToken(k.fault(1, 42, false));
  assert.equal(k.stateOf(a), 'parked');
  assert.equal(k.running(1), -1);
  assert.equal(k.vcpuState(1), 'halted', 'only the faulting task waits, and nothing else is runnable');
  assert.equal(k.schedule(1), -1);
  assert.deepEqual(k.tokensFor(42), [tok]);
  assert.equal(k.ready(tok), 1, 'ready names the halted vCPU');
  assert.deepEqual(k.tokensFor(42), []);
  assert.equal(k.stateOf(a), 'runnable');
  assert.equal(k.outstandingAsync(1), 0);
  assert.equal(k.schedule(1), a);
  assert.equal(k.vcpuState(1), 'running');
});

test('ready while the vCPU runs another task returns -1 and queues the task behind it', () => {
  const k = kernel(1, true);
  const a = k.addTask(0);
  const b = k.addTask(0);
  assert.equal(k.schedule(0), a);
  const tok = parkToken(k.fault(0, 5, false));
  assert.equal(k.schedule(0), b, 'the vCPU runs another runnable task');
  assert.equal(k.ready(tok), -1);
  assert.equal(k.hasRunnable(0), true);
  assert.equal(k.preempt(0), true);
  assert.equal(k.schedule(0), a);
});

test('wake(task) returns the vCPU of a sleeping task when that vCPU is idle, -1 otherwise', () => {
  const k = kernel(2, true);
  const s = k.addTask(1, 'sleeping');
  const r = k.addTask(0);
  assert.equal(k.stateOf(s), 'sleeping');
  assert.equal(k.vcpuState(1), 'halted');
  assert.equal(k.schedule(1), -1, 'a sleeping task is not scheduled');
  assert.equal(k.wake(s), 1);
  assert.equal(k.stateOf(s), 'runnable');
  assert.equal(k.wake(s), -1, 'waking a runnable task does nothing');
  assert.equal(k.schedule(1), s);
  assert.equal(k.wake(s), -1, 'waking a running task does nothing');
  assert.equal(k.stateOf(s), 'running');
  k.sleep(1);
  assert.equal(k.stateOf(s), 'sleeping');
  assert.equal(k.vcpuState(1), 'halted');
  // a task woken while its vCPU runs something else needs no kick
  const s0 = k.addTask(0, 'sleeping');
  assert.equal(k.schedule(0), r);
  assert.equal(k.wake(s0), -1);
  assert.equal(k.stateOf(s0), 'runnable');
  assert.throws(() => k.sleep(1), KernelError, 'sleep needs a running task');
});

test('the 65th outstanding async fault on a vCPU blocks; after one ready the next fault parks again', () => {
  const LIMIT = 64;
  const k = kernel(2, true, LIMIT);
  for (let i = 0; i < LIMIT + 3; i++) k.addTask(0);
  const other = [k.addTask(1), k.addTask(1)];
  const tokens: number[] = [];
  for (let i = 0; i < LIMIT; i++) {
    assert.ok(k.schedule(0) >= 0);
    tokens.push(parkToken(k.fault(0, 1000 + i, false)));
    assert.equal(k.outstandingAsync(0), i + 1);
  }
  assert.equal(new Set(tokens).size, LIMIT, 'tokens are distinct');
  const t65 = k.schedule(0);
  assert.deepEqual(k.fault(0, 2000, false), { action: 'block', reason: 'limit' });
  assert.equal(k.vcpuState(0), 'blocked');
  assert.equal(k.running(0), t65);
  assert.equal(k.outstandingAsync(0), LIMIT, 'a blocking fault takes no token');
  // the limit is per vCPU: vCPU 1 still parks
  assert.equal(k.schedule(1), other[0]);
  parkToken(k.fault(1, 3000, false));
  assert.equal(k.outstandingAsync(1), 1);
  // one ready frees a slot; the vCPU stays blocked on its own page until it arrives
  assert.equal(k.ready(tokens[0]), -1);
  assert.equal(k.outstandingAsync(0), LIMIT - 1);
  assert.equal(k.vcpuState(0), 'blocked');
  assert.deepEqual(k.pageArrived(2000), [0]);
  assert.equal(k.schedule(0), t65);
  parkToken(k.fault(0, 2001, false));
  assert.equal(k.outstandingAsync(0), LIMIT);
  assert.ok(k.schedule(0) >= 0);
  assert.deepEqual(k.fault(0, 2002, false), { action: 'block', reason: 'limit' });
  assert.equal(k.asyncFaults, LIMIT + 2);
  assert.equal(k.syncFaults, 2);
});

test('kernel-context faults always block, even when cooperative and below the limit', () => {
  const k = kernel(1, true, 64);
  const a = k.addTask(0);
  k.addTask(0);
  assert.equal(k.schedule(0), a);
  assert.deepEqual(k.fault(0, 3, true), { action: 'block', reason: 'kernel-context' });
  assert.equal(k.outstandingAsync(0), 0);
  assert.equal(k.stateOf(a), 'running');
  assert.equal(k.schedule(0), -1);
  assert.deepEqual(k.tokensFor(3), []);
  assert.equal(k.syncFaults, 1);
  assert.equal(k.asyncFaults, 0);
});

test('blocking mode never parks, whatever the context and however many faults', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(50), fc.boolean()), { minLength: 1, maxLength: 100 }), (faults) => {
      const k = kernel(1, false, 1);
      const t = k.addTask(0);
      k.addTask(0);
      for (const [pfn, kc] of faults) {
        assert.equal(k.schedule(0), t);
        assert.deepEqual(k.fault(0, pfn, kc), { action: 'block', reason: 'blocking-mode' });
        assert.equal(k.outstandingAsync(0), 0);
        assert.deepEqual(k.pageArrived(pfn), [0]);
      }
      assert.equal(k.asyncFaults, 0);
      assert.equal(k.syncFaults, faults.length);
    }),
  );
});

test('setCooperative switches how the next fault is taken', () => {
  const k = kernel(1, false);
  const a = k.addTask(0);
  k.schedule(0);
  assert.equal(k.fault(0, 1, false).action, 'block');
  k.pageArrived(1);
  k.setCooperative(true);
  parkToken(k.fault(0, 2, false));
  assert.equal(k.stateOf(a), 'parked');
});

test('ready with an unknown or already-used token throws KernelError and changes nothing', () => {
  const k = kernel(1, true);
  const a = k.addTask(0);
  k.addTask(0, 'sleeping');
  k.schedule(0);
  const tok = parkToken(k.fault(0, 9, false));
  for (const bad of [0, -1, tok + 1, 1e9, Number.NaN])
    assert.throws(() => k.ready(bad), KernelError, `token ${bad}`);
  assert.equal(k.stateOf(a), 'parked', 'a wrong token wakes nothing');
  assert.equal(k.outstandingAsync(0), 1);
  assert.equal(k.ready(tok), 0);
  assert.throws(() => k.ready(tok), KernelError, 'a token is good for one ready only');
  assert.equal(k.outstandingAsync(0), 0);
  assert.equal(k.stateOf(a), 'runnable');
  assert.equal(k.schedule(0), a);
  assert.throws(
    () => k.ready(tok),
    (e: unknown) => e instanceof KernelError && e.message.includes(String(tok)),
    'the error names the token',
  );
});

test('bad arguments are KernelErrors', () => {
  assert.throws(() => kernel(0, true), KernelError);
  assert.throws(() => kernel(1.5, true), KernelError);
  const k = kernel(2, true);
  assert.throws(() => k.addTask(2), KernelError);
  assert.throws(() => k.addTask(-1), KernelError);
  assert.throws(() => k.fault(0, 1, false), KernelError, 'a fault needs a running task');
  assert.equal(k.taskCount, 0);
});

// --- the model test ---------------------------------------------------------------------

type Op =
  | { k: 'add'; v: number; sleeping: boolean }
  | { k: 'schedule'; v: number }
  | { k: 'preempt'; v: number }
  | { k: 'sleep'; v: number }
  | { k: 'wake'; t: number }
  | { k: 'fault'; v: number; pfn: number; kc: boolean }
  | { k: 'ready'; i: number }
  | { k: 'badReady'; i: number }
  | { k: 'arrive'; pfn: number }
  | { k: 'coop'; on: boolean };

const MAX_VCPUS = 3;
const PFNS = 6;

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('add' as const),
      v: fc.nat(MAX_VCPUS - 1),
      sleeping: fc.boolean(),
    }),
  },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('schedule' as const), v: fc.nat(MAX_VCPUS - 1) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('preempt' as const), v: fc.nat(MAX_VCPUS - 1) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('sleep' as const), v: fc.nat(MAX_VCPUS - 1) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('wake' as const), t: fc.nat(40) }) },
  {
    weight: 5,
    arbitrary: fc.record({
      k: fc.constant('fault' as const),
      v: fc.nat(MAX_VCPUS - 1),
      pfn: fc.nat(PFNS - 1),
      kc: fc.boolean(),
    }),
  },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('ready' as const), i: fc.nat(100) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('badReady' as const), i: fc.nat(100) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('arrive' as const), pfn: fc.nat(PFNS - 1) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('coop' as const), on: fc.boolean() }) },
);

/** The rules of semantics 4, written as plainly as possible. */
class Model {
  state: TaskState[] = [];
  vcpuOf: number[] = [];
  queues: number[][];
  current: number[];
  blockedOn: number[];
  parked = new Map<number, { task: number; pfn: number }>();
  faults = 0;
  async = 0;
  sync = 0;

  constructor(
    readonly vcpus: number,
    public cooperative: boolean,
    readonly limit: number,
  ) {
    this.queues = Array.from({ length: vcpus }, () => []);
    this.current = new Array(vcpus).fill(-1);
    this.blockedOn = new Array(vcpus).fill(-1);
  }

  add(v: number, sleeping: boolean): number {
    const id = this.state.length;
    this.state.push(sleeping ? 'sleeping' : 'runnable');
    this.vcpuOf.push(v);
    if (!sleeping) this.queues[v].push(id);
    return id;
  }

  parkedOn(v: number): number {
    let n = 0;
    for (const p of this.parked.values()) if (this.vcpuOf[p.task] === v) n++;
    return n;
  }

  vcpuState(v: number): 'running' | 'halted' | 'blocked' {
    if (this.blockedOn[v] >= 0) return 'blocked';
    return this.current[v] >= 0 ? 'running' : 'halted';
  }

  schedule(v: number): number {
    if (this.blockedOn[v] >= 0) return -1;
    if (this.current[v] >= 0) return this.current[v];
    const t = this.queues[v].shift();
    if (t === undefined) return -1;
    this.state[t] = 'running';
    this.current[v] = t;
    return t;
  }

  preempt(v: number): boolean {
    const t = this.current[v];
    if (t < 0 || this.blockedOn[v] >= 0 || this.queues[v].length === 0) return false;
    this.state[t] = 'runnable';
    this.queues[v].push(t);
    this.current[v] = -1;
    return true;
  }

  sleep(v: number): void {
    const t = this.current[v];
    this.state[t] = 'sleeping';
    this.current[v] = -1;
  }

  private runnable(t: number): number {
    const v = this.vcpuOf[t];
    this.state[t] = 'runnable';
    this.queues[v].push(t);
    return this.current[v] < 0 && this.blockedOn[v] < 0 ? v : -1;
  }

  wake(t: number): number {
    return this.state[t] === 'sleeping' ? this.runnable(t) : -1;
  }

  /** Returns the block reason, or null when the task parks (the kernel's token is recorded). */
  fault(v: number, pfn: number, kc: boolean): string | null {
    this.faults++;
    const reason = !this.cooperative
      ? 'blocking-mode'
      : kc
        ? 'kernel-context'
        : this.parkedOn(v) >= this.limit
          ? 'limit'
          : null;
    if (reason) {
      this.blockedOn[v] = pfn;
      this.sync++;
      return reason;
    }
    this.async++;
    return null;
  }

  park(v: number, pfn: number, token: number): void {
    const t = this.current[v];
    this.parked.set(token, { task: t, pfn });
    this.state[t] = 'parked';
    this.current[v] = -1;
  }

  ready(token: number): number {
    const p = this.parked.get(token)!;
    this.parked.delete(token);
    return this.runnable(p.task);
  }

  arrive(pfn: number): number[] {
    const out: number[] = [];
    for (let v = 0; v < this.vcpus; v++)
      if (this.blockedOn[v] === pfn) {
        this.blockedOn[v] = -1;
        out.push(v);
      }
    return out;
  }
}

function checkInvariants(k: GuestKernel, m: Model, where: string): void {
  assert.equal(k.taskCount, m.state.length, where);
  const states: TaskState[] = ['runnable', 'running', 'parked', 'sleeping'];
  for (let t = 0; t < k.taskCount; t++) {
    const s = k.stateOf(t);
    assert.ok(states.includes(s), `${where}: task ${t} in no state (${s})`);
    assert.equal(s, m.state[t], `${where}: state of task ${t}`);
    const v = k.vcpuOf(t);
    assert.equal(v, m.vcpuOf[t]);
    // running iff it is its vCPU's current task
    assert.equal(s === 'running', k.running(v) === t, `${where}: task ${t} running ⇔ running(${v})`);
    // exactly one state: in a run queue iff runnable, parked under a token iff parked
    const queued = m.queues[v].filter((x) => x === t).length;
    assert.equal(queued, s === 'runnable' ? 1 : 0, `${where}: task ${t} queued ${queued} times`);
    const parked = [...m.parked.values()].filter((p) => p.task === t).length;
    assert.equal(parked, s === 'parked' ? 1 : 0, `${where}: task ${t} parked ${parked} times`);
  }
  let parkedTotal = 0;
  for (let v = 0; v < k.vcpus; v++) {
    assert.equal(k.vcpuState(v), m.vcpuState(v), `${where}: vCPU ${v} state`);
    assert.equal(k.running(v), m.current[v], `${where}: running(${v})`);
    assert.equal(k.blockedPage(v), m.blockedOn[v], `${where}: blockedPage(${v})`);
    assert.equal(k.hasRunnable(v), m.queues[v].length > 0, `${where}: hasRunnable(${v})`);
    const parkedHere = m.parkedOn(v);
    assert.equal(k.outstandingAsync(v), parkedHere, `${where}: outstandingAsync(${v})`);
    assert.ok(k.outstandingAsync(v) <= m.limit, `${where}: vCPU ${v} over the async-fault limit`);
    parkedTotal += parkedHere;
  }
  assert.equal(parkedTotal, m.parked.size);
  for (let pfn = 0; pfn < PFNS; pfn++) {
    const expected = [...m.parked].filter(([, p]) => p.pfn === pfn).map(([tok]) => tok);
    assert.deepEqual(
      [...k.tokensFor(pfn)].sort((a, b) => a - b),
      expected.sort((a, b) => a - b),
      `${where}: tokensFor(${pfn})`,
    );
  }
  assert.equal(k.asyncFaults, m.async, `${where}: asyncFaults`);
  assert.equal(k.syncFaults, m.sync, `${where}: syncFaults`);
  assert.equal(k.asyncFaults + k.syncFaults, m.faults, `${where}: every fault counted once`);
}

/** Empties every run queue through `schedule`, checking the order against the model's queues. */
function drain(k: GuestKernel, m: Model): void {
  for (let v = 0; v < k.vcpus; v++) {
    if (k.vcpuState(v) === 'blocked') assert.ok(k.pageArrived(k.blockedPage(v)).includes(v));
    if (k.running(v) >= 0) k.sleep(v);
    const order: number[] = [];
    for (let t = k.schedule(v); t >= 0; t = k.schedule(v)) {
      order.push(t);
      k.sleep(v);
    }
    assert.deepEqual(order, m.queues[v], `run queue of vCPU ${v} in schedule order`);
    assert.equal(k.hasRunnable(v), false);
  }
}

test('model: random operation sequences keep the kernel equal to the rules', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: MAX_VCPUS }),
      fc.boolean(),
      fc.constantFrom(1, 2, 3, 64),
      fc.array(opArb, { minLength: 1, maxLength: 200, size: 'max' }),
      (vcpus, cooperative, limit, ops) => {
        const k = kernel(vcpus, cooperative, limit);
        const m = new Model(vcpus, cooperative, limit);
        const issued = new Set<number>();
        ops.forEach((op, step) => {
          const where = `step ${step} ${JSON.stringify(op)}`;
          switch (op.k) {
            case 'add': {
              const v = op.v % vcpus;
              assert.equal(k.addTask(v, op.sleeping ? 'sleeping' : 'runnable'), m.add(v, op.sleeping));
              break;
            }
            case 'schedule':
              assert.equal(k.schedule(op.v % vcpus), m.schedule(op.v % vcpus), where);
              break;
            case 'preempt':
              assert.equal(k.preempt(op.v % vcpus), m.preempt(op.v % vcpus), where);
              break;
            case 'sleep': {
              const v = op.v % vcpus;
              // only the running task of a running vCPU can go to sleep
              if (m.vcpuState(v) === 'blocked') break;
              if (m.current[v] < 0) assert.throws(() => k.sleep(v), KernelError, where);
              else {
                k.sleep(v);
                m.sleep(v);
              }
              break;
            }
            case 'wake': {
              if (m.state.length === 0) break;
              const t = op.t % m.state.length;
              assert.equal(k.wake(t), m.wake(t), where);
              break;
            }
            case 'fault': {
              const v = op.v % vcpus;
              if (m.vcpuState(v) === 'blocked') break; // a blocked vCPU executes nothing
              if (m.current[v] < 0) {
                assert.throws(() => k.fault(v, op.pfn, op.kc), KernelError, where);
                break;
              }
              const a = k.fault(v, op.pfn, op.kc);
              const reason = m.fault(v, op.pfn, op.kc);
              if (reason) assert.deepEqual(a, { action: 'block', reason }, where);
              else {
                const token = parkToken(a);
                assert.ok(!issued.has(token), `${where}: token ${token} issued twice`);
                issued.add(token);
                m.park(v, op.pfn, token);
              }
              break;
            }
            case 'ready': {
              const tokens = [...m.parked.keys()];
              if (tokens.length === 0) break;
              const tok = tokens[op.i % tokens.length];
              assert.equal(k.ready(tok), m.ready(tok), where);
              break;
            }
            case 'badReady': {
              // a token never issued, or one already used
              const used = [...issued].filter((t) => !m.parked.has(t));
              const tok = used.length > 0 && op.i % 2 === 0 ? used[op.i % used.length] : 1_000_000 + op.i;
              assert.throws(() => k.ready(tok), KernelError, where);
              break;
            }
            case 'arrive':
              assert.deepEqual(k.pageArrived(op.pfn), m.arrive(op.pfn), where);
              break;
            case 'coop':
              k.setCooperative(op.on);
              m.cooperative = op.on;
              break;
          }
          checkInvariants(k, m, where);
        });
        drain(k, m);
      },
    ),
    { numRuns: 300 },
  );
});
