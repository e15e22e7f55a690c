import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { PageSet } from '../../src/engine/page-set.ts';

const CHUNK = 4096; // pages per chunk, as documented in page-set.ts
const BITMAP_BYTES = CHUNK / 8; // one bit per page of a partial chunk

/** Reference implementation: one byte per page, every operation done the slow obvious way. */
class Model {
  readonly bits: Uint8Array;
  size = 0;

  constructor(readonly capacity: number) {
    this.bits = new Uint8Array(capacity);
  }

  valid(p: number): boolean {
    return Number.isInteger(p) && p >= 0 && p < this.capacity;
  }

  has(p: number): boolean {
    return this.valid(p) && this.bits[p] === 1;
  }

  add(p: number): boolean {
    if (this.bits[p]) return false;
    this.bits[p] = 1;
    this.size++;
    return true;
  }

  delete(p: number): boolean {
    if (!this.has(p)) return false;
    this.bits[p] = 0;
    this.size--;
    return true;
  }

  private clip(s: number, e: number): [number, number] {
    return [Math.max(0, s), Math.min(this.capacity, e)];
  }

  addRange(s: number, e: number): number {
    let n = 0;
    [s, e] = this.clip(s, e);
    for (let p = s; p < e; p++) if (this.add(p)) n++;
    return n;
  }

  deleteRange(s: number, e: number): number {
    let n = 0;
    [s, e] = this.clip(s, e);
    for (let p = s; p < e; p++) if (this.delete(p)) n++;
    return n;
  }

  countRange(s: number, e: number): number {
    let n = 0;
    [s, e] = this.clip(s, e);
    for (let p = s; p < e; p++) n += this.bits[p];
    return n;
  }

  next(from: number): number {
    for (let p = Math.max(0, from); p < this.capacity; p++) if (this.bits[p]) return p;
    return -1;
  }

  nextAbsent(from: number): number {
    for (let p = Math.max(0, from); p < this.capacity; p++) if (!this.bits[p]) return p;
    return this.capacity;
  }

  addAll(o: Model): void {
    for (let p = 0; p < this.capacity; p++) if (o.bits[p]) this.add(p);
  }

  deleteAll(o: Model): void {
    for (let p = 0; p < this.capacity; p++) if (o.bits[p]) this.delete(p);
  }

  clear(): void {
    this.bits.fill(0);
    this.size = 0;
  }

  /** Maximal runs as a flat `start, count` list. */
  runs(): number[] {
    const out: number[] = [];
    for (let p = 0; p < this.capacity; p++) {
      if (!this.bits[p]) continue;
      const s = p;
      while (p < this.capacity && this.bits[p]) p++;
      out.push(s, p - s);
    }
    return out;
  }

  /** The pages takeRuns must remove, in scan order (removes them). */
  take(from: number, max: number): number[] {
    const start = from >= 0 && from < this.capacity ? from : 0;
    const taken: number[] = [];
    for (let i = 0; i < this.capacity && taken.length < max; i++) {
      const p = (start + i) % this.capacity;
      if (this.bits[p]) taken.push(p);
    }
    for (const p of taken) this.delete(p);
    return taken;
  }

  /** Chunks that are neither empty nor full: the only ones that may hold a bitmap. */
  partialChunks(): number {
    let partial = 0;
    for (let base = 0; base < this.capacity; base += CHUNK) {
      const len = Math.min(CHUNK, this.capacity - base);
      const n = this.countRange(base, base + len);
      if (n !== 0 && n !== len) partial++;
    }
    return partial;
  }
}

/** Groups a list of pages into `start, count` runs of consecutive pfns, preserving order. */
function group(pages: number[]): number[] {
  const out: number[] = [];
  for (const p of pages) {
    const k = out.length;
    if (k > 0 && out[k - 2] + out[k - 1] === p) out[k - 1]++;
    else out.push(p, 1);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Generators

const SPECIAL_CAPACITIES = [0, 1, 31, 32, 33, 4095, 4096, 4097, 3 * CHUNK + 17];
const capacityArb = fc.oneof(fc.constantFrom(...SPECIAL_CAPACITIES), fc.integer({ min: 0, max: 40_000 }));

const chunkCount = (cap: number) => Math.ceil(cap / CHUNK);

/** Page numbers near chunk boundaries (possibly outside [0, cap)). */
const nearBoundary = (cap: number) =>
  fc
    .tuple(fc.integer({ min: 0, max: chunkCount(cap) }), fc.integer({ min: -2, max: 2 }))
    .map(([k, d]) => k * CHUNK + d);

/** A valid page (biased towards chunk edges and the last page); 0 when cap is 0 (invalid then). */
const inPfn = (cap: number) =>
  fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max: Math.max(0, cap - 1) }) },
    {
      weight: 2,
      arbitrary: nearBoundary(cap).map((p) => Math.min(Math.max(p, 0), Math.max(0, cap - 1))),
    },
    { weight: 1, arbitrary: fc.constant(Math.max(0, cap - 1)) },
  );

/** Integers outside [0, cap), including ones inside the (short) last chunk and beyond 2^32. */
const outPfn = (cap: number) =>
  fc.constantFrom(
    -1,
    -CHUNK,
    cap,
    cap + 1,
    chunkCount(cap) * CHUNK - 1 >= cap ? chunkCount(cap) * CHUNK - 1 : cap + 2,
    chunkCount(cap) * CHUNK + 5,
    2 ** 32 + 1,
    2 ** 32 + cap - 1,
  );

/** Probes for the query methods: any integer, in or out of range. */
const probeArb = (cap: number) =>
  fc.oneof({ weight: 4, arbitrary: inPfn(cap) }, nearBoundary(cap), { weight: 1, arbitrary: outPfn(cap) });

const endpoint = (cap: number) =>
  fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: -3, max: cap + 3 }) },
    { weight: 3, arbitrary: nearBoundary(cap) },
    { weight: 1, arbitrary: fc.constantFrom(0, cap, -Infinity, Infinity, -1e9, 1e12) },
  );

const rangeArb = (cap: number) => fc.tuple(endpoint(cap), endpoint(cap));

type Build = { kind: 'addRange' | 'deleteRange'; s: number; e: number } | { kind: 'add'; p: number };

/** Instructions to build a second set of the same capacity (full, partial and empty chunks). */
const buildArb = (cap: number) =>
  fc.array(
    fc.oneof(
      rangeArb(cap).map(([s, e]): Build => ({ kind: 'addRange', s, e })),
      rangeArb(cap).map(([s, e]): Build => ({ kind: 'deleteRange', s, e })),
      inPfn(cap).map((p): Build => ({ kind: 'add', p })),
    ),
    { maxLength: 8 },
  );

type Op =
  | { kind: 'add' | 'delete'; p: number }
  | { kind: 'addRange' | 'deleteRange'; s: number; e: number }
  | { kind: 'addAll' | 'deleteAll'; build: Build[] }
  | { kind: 'addAllSelf' | 'deleteAllSelf' | 'clear' }
  | { kind: 'takeRuns'; from: number; max: number };

const opArb = (cap: number): fc.Arbitrary<Op> =>
  fc.oneof(
    {
      weight: 5,
      arbitrary: fc
        .oneof({ weight: 9, arbitrary: inPfn(cap) }, { weight: 1, arbitrary: outPfn(cap) })
        .map((p): Op => ({ kind: 'add', p })),
    },
    {
      weight: 4,
      arbitrary: fc
        .oneof({ weight: 9, arbitrary: inPfn(cap) }, { weight: 1, arbitrary: outPfn(cap) })
        .map((p): Op => ({ kind: 'delete', p })),
    },
    { weight: 3, arbitrary: rangeArb(cap).map(([s, e]): Op => ({ kind: 'addRange', s, e })) },
    { weight: 3, arbitrary: rangeArb(cap).map(([s, e]): Op => ({ kind: 'deleteRange', s, e })) },
    { weight: 1, arbitrary: buildArb(cap).map((build): Op => ({ kind: 'addAll', build })) },
    { weight: 1, arbitrary: buildArb(cap).map((build): Op => ({ kind: 'deleteAll', build })) },
    {
      weight: 1,
      arbitrary: fc.constantFrom<Op>({ kind: 'addAllSelf' }, { kind: 'deleteAllSelf' }, { kind: 'clear' }),
    },
    {
      weight: 3,
      arbitrary: fc
        .tuple(
          fc.oneof({ weight: 5, arbitrary: inPfn(cap) }, { weight: 1, arbitrary: outPfn(cap) }),
          fc.oneof(
            { weight: 6, arbitrary: fc.integer({ min: 0, max: cap + 2 }) },
            { weight: 2, arbitrary: fc.integer({ min: 0, max: 70 }) },
            { weight: 1, arbitrary: fc.constantFrom(-1, Infinity, Number.MAX_SAFE_INTEGER) },
          ),
        )
        .map(([from, max]): Op => ({ kind: 'takeRuns', from, max })),
    },
  );

// ---------------------------------------------------------------------------------------------
// Checks

function build(cap: number, steps: Build[]): [PageSet, Model] {
  const set = new PageSet(cap);
  const model = new Model(cap);
  for (const b of steps) {
    if (b.kind === 'add') {
      if (model.valid(b.p)) assert.equal(set.add(b.p), model.add(b.p));
    } else if (b.kind === 'addRange') assert.equal(set.addRange(b.s, b.e), model.addRange(b.s, b.e));
    else assert.equal(set.deleteRange(b.s, b.e), model.deleteRange(b.s, b.e));
  }
  assert.deepEqual(runsOf(set), model.runs());
  return [set, model];
}

/**
 * The set's runs through `runs()`, giving up (instead of looping forever) after more runs than
 * the capacity allows, then checked against `toRuns()`.
 */
function runsOf(set: PageSet): number[] {
  const out: number[] = [];
  for (const [s, e] of set.runs()) {
    out.push(s, e - s);
    if (out.length > set.capacity + 2) assert.fail(`runs() does not terminate: ${out.slice(-6)}`);
  }
  assert.deepEqual(set.toRuns(), out, 'toRuns() and runs() disagree');
  return out;
}

/** Checks toRuns' shape on its own: sorted, non-overlapping, maximal, inside [0, capacity). */
function checkRunShape(runs: number[], cap: number): void {
  assert.equal(runs.length % 2, 0);
  let prevEnd = -2;
  for (let i = 0; i < runs.length; i += 2) {
    const [s, n] = [runs[i], runs[i + 1]];
    assert.ok(Number.isInteger(s) && Number.isInteger(n) && n > 0, `run ${s}+${n}`);
    assert.ok(s > prevEnd, `run ${s} overlaps or touches the previous one ending at ${prevEnd}`);
    assert.ok(s >= 0 && s + n <= cap, `run ${s}+${n} outside capacity ${cap}`);
    prevEnd = s + n;
  }
}

/** Query points worth probing for the current contents: edges of runs and of chunks. */
function interesting(model: Model, runs: number[], extra: number[]): number[] {
  const pts = new Set<number>([-1, 0, 1, model.capacity - 1, model.capacity, model.capacity + 1, ...extra]);
  for (let base = 0; base <= model.capacity + CHUNK; base += CHUNK)
    for (let d = -1; d <= 1; d++) pts.add(base + d);
  const limit = Math.min(runs.length, 64); // the first 32 runs are plenty
  for (let i = 0; i < limit; i += 2) {
    const s = runs[i];
    const e = s + runs[i + 1];
    for (const p of [s - 1, s, s + 1, e - 1, e]) pts.add(p);
  }
  return [...pts];
}

function checkState(
  set: PageSet,
  model: Model,
  probes: number[],
  emptyFootprint: number,
  what: string,
): void {
  assert.equal(set.size, model.size, `size after ${what}`);
  const runs = runsOf(set);
  assert.deepEqual(runs, model.runs(), `toRuns after ${what}`);
  checkRunShape(runs, model.capacity);
  if (set.representation === 'bitmap') {
    assert.equal(set.bitmaps, model.partialChunks(), `only partial chunks may hold a bitmap (after ${what})`);
    if (set.bitmaps === 0)
      assert.equal(set.footprintBytes(), emptyFootprint, `no arena without bitmaps (after ${what})`);
  } else {
    assert.equal(set.bitmaps, 0, `a run list holds no bitmap (after ${what})`);
    assert.ok(runs.length <= 2 * 64, `a run list stays short (after ${what})`);
    assert.equal(
      set.footprintBytes(),
      emptyFootprint + 8 * runs.length,
      `a run list costs its runs (after ${what})`,
    );
  }
  const pts = interesting(model, runs, probes);
  for (const p of pts) {
    assert.equal(set.has(p), model.has(p), `has(${p}) after ${what}`);
    assert.equal(set.next(p), model.next(p), `next(${p}) after ${what}`);
    assert.equal(set.nextAbsent(p), model.nextAbsent(p), `nextAbsent(${p}) after ${what}`);
  }
  for (let i = 0; i + 1 < pts.length; i += 2) {
    const [a, b] = [pts[i], pts[i + 1]];
    assert.equal(set.countRange(a, b), model.countRange(a, b), `countRange(${a}, ${b}) after ${what}`);
    assert.equal(set.countRange(b, a), model.countRange(b, a), `countRange(${b}, ${a}) after ${what}`);
  }
}

/** Exhaustive comparison of every query at every page (and just outside). */
function checkEverywhere(set: PageSet, model: Model): void {
  const cap = model.capacity;
  // sweep backwards so the expected next/nextAbsent are O(1) each
  let next = -1;
  let nextAbsent = cap;
  // from just past the end of the last (possibly short) chunk, where stray bits would hide
  for (let p = Math.max(cap + 2, chunkCount(cap) * CHUNK + 1); p >= -2; p--) {
    if (p >= 0 && p < cap) {
      if (model.bits[p]) next = p;
      else nextAbsent = p;
    }
    const expectNext = p >= cap ? -1 : next;
    const expectAbsent = p >= cap ? cap : nextAbsent;
    if (set.has(p) !== model.has(p)) assert.fail(`has(${p}): ${set.has(p)}`);
    if (set.next(p) !== expectNext) assert.equal(set.next(p), expectNext, `next(${p})`);
    if (set.nextAbsent(p) !== expectAbsent) assert.equal(set.nextAbsent(p), expectAbsent, `nextAbsent(${p})`);
  }
  for (let base = 0; base < cap; base += CHUNK) {
    assert.equal(set.countRange(base, base + CHUNK), model.countRange(base, base + CHUNK), `chunk ${base}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Properties

test('PageSet behaves like a plain set of pages, as runs and as bitmaps (model-based)', () => {
  const scenario = capacityArb.chain((cap) =>
    fc.record({
      cap: fc.constant(cap),
      start: fc.constantFrom('runs' as const, 'bitmap' as const),
      ops: fc.array(opArb(cap), { minLength: 1, maxLength: 30 }),
      probes: fc.array(probeArb(cap), { maxLength: 8 }),
    }),
  );
  fc.assert(
    fc.property(scenario, ({ cap, start, ops, probes }) => {
      const set = new PageSet(cap, start);
      const model = new Model(cap);
      const emptyFootprint = set.footprintBytes();
      assert.equal(set.capacity, cap);
      checkState(set, model, probes, emptyFootprint, 'construction');
      ops.forEach((op, i) => {
        const what = `op ${i} ${JSON.stringify(op)}`;
        switch (op.kind) {
          case 'add':
            if (model.valid(op.p)) assert.equal(set.add(op.p), model.add(op.p), what);
            else assert.throws(() => set.add(op.p), RangeError, what);
            break;
          case 'delete':
            assert.equal(set.delete(op.p), model.delete(op.p), what);
            break;
          case 'addRange':
            assert.equal(set.addRange(op.s, op.e), model.addRange(op.s, op.e), what);
            break;
          case 'deleteRange':
            assert.equal(set.deleteRange(op.s, op.e), model.deleteRange(op.s, op.e), what);
            break;
          case 'addAll':
          case 'deleteAll': {
            const [other, otherModel] = build(cap, op.build);
            const before = runsOf(other);
            if (op.kind === 'addAll') {
              set.addAll(other);
              model.addAll(otherModel);
            } else {
              set.deleteAll(other);
              model.deleteAll(otherModel);
            }
            assert.deepEqual(runsOf(other), before, `${what} must not change its argument`);
            assert.equal(other.size, otherModel.size);
            break;
          }
          case 'addAllSelf':
            set.addAll(set);
            break;
          case 'deleteAllSelf':
            set.deleteAll(set);
            model.clear();
            break;
          case 'clear':
            set.clear();
            model.clear();
            break;
          case 'takeRuns': {
            const out = [-7, 3]; // takeRuns appends: what is there must stay
            const expected = model.take(op.from, op.max);
            const taken = set.takeRuns(op.from, op.max, out);
            assert.equal(taken, expected.length, `${what} return value`);
            assert.deepEqual(out.slice(0, 2), [-7, 3], `${what} clobbered out`);
            const appended = out.slice(2);
            const pages: number[] = [];
            for (let j = 0; j < appended.length; j += 2) {
              assert.ok(appended[j + 1] > 0, `${what} empty run`);
              for (let k = 0; k < appended[j + 1]; k++) pages.push(appended[j] + k);
            }
            assert.deepEqual(pages, expected, `${what} took the wrong pages or in the wrong order`);
            assert.deepEqual(appended, group(expected), `${what} runs are not maximal`);
            break;
          }
        }
        checkState(set, model, probes, emptyFootprint, what);
      });
      checkEverywhere(set, model);
    }),
    { numRuns: 400, includeErrorInReport: true },
  );
});

test('toRuns round-trips: rebuilding from the runs gives the same set', () => {
  fc.assert(
    fc.property(
      capacityArb.chain((cap) => fc.tuple(fc.constant(cap), buildArb(cap))),
      ([cap, steps]) => {
        const [set, model] = build(cap, steps);
        const copy = new PageSet(cap);
        const runs = runsOf(set); // also checks runs() against toRuns()
        for (let i = 0; i < runs.length; i += 2) {
          assert.equal(copy.addRange(runs[i], runs[i] + runs[i + 1]), runs[i + 1]);
        }
        assert.deepEqual(runsOf(copy), runs);
        assert.equal(copy.size, model.size);
        assert.equal(copy.countRange(0, cap), model.size);
      },
    ),
    { numRuns: 100, includeErrorInReport: true },
  );
});

test('takeRuns drains the whole set in max-sized bites, visiting every page exactly once', () => {
  fc.assert(
    fc.property(
      capacityArb.chain((cap) =>
        fc.tuple(fc.constant(cap), buildArb(cap), inPfn(cap), fc.integer({ min: 1, max: 5000 })),
      ),
      ([cap, steps, from, max]) => {
        const [set, model] = build(cap, steps);
        const expected = model.take(from, Infinity);
        const seen: number[] = [];
        let pos = from;
        for (let guard = 0; set.size > 0; guard++) {
          assert.ok(guard <= expected.length, 'takeRuns made no progress');
          const out: number[] = [];
          const before = set.size;
          const n = set.takeRuns(pos, max, out);
          assert.equal(n, Math.min(max, before));
          assert.equal(set.size, before - n);
          for (let j = 0; j < out.length; j += 2) for (let k = 0; k < out[j + 1]; k++) seen.push(out[j] + k);
          if (out.length) pos = out[out.length - 2] + out[out.length - 1]; // resume where it stopped
        }
        // resuming from where the previous call stopped visits the pages in one circular sweep
        assert.deepEqual(seen, expected);
        assert.equal(set.takeRuns(from, max, []), 0);
      },
    ),
    { numRuns: 100, includeErrorInReport: true },
  );
});

// ---------------------------------------------------------------------------------------------
// Edge cases

test('a full chunk becomes partial when one page is deleted (including the short last chunk)', () => {
  for (const cap of [1, 31, 32, 33, 4095, 4096, 4097, 2 * CHUNK, 3 * CHUNK + 17]) {
    const last = cap - 1;
    const victims = new Set([0, 31, 32, last, last - 1, Math.floor(last / CHUNK) * CHUNK, CHUNK - 1, CHUNK]);
    for (const v of victims) {
      if (v < 0 || v >= cap) continue;
      const set = new PageSet(cap, 'bitmap');
      assert.equal(set.addRange(0, cap), cap);
      assert.equal(set.has(last), true);
      assert.equal(set.delete(v), true, `cap ${cap} delete(${v})`);
      assert.equal(set.size, cap - 1);
      assert.equal(set.has(v), false);
      assert.equal(set.delete(v), false);
      // nothing beyond the capacity appears when the chunk gets a bitmap
      const expected = [0, v, v + 1, cap - v - 1].filter((_, i) => (i < 2 ? v > 0 : v < last));
      assert.deepEqual(runsOf(set), expected, `cap ${cap} without ${v}`);
      assert.equal(set.nextAbsent(0), v);
      assert.equal(set.next(v), v === last ? -1 : v + 1);
      assert.equal(set.countRange(0, cap + CHUNK), cap - 1);
      assert.equal(set.nextAbsent(v + 1), cap);
      // and back: the chunk is full again and holds no bitmap
      assert.equal(set.add(v), true);
      assert.equal(set.size, cap);
      assert.equal(set.bitmaps, 0);
      assert.equal(set.footprintBytes(), new PageSet(cap, 'bitmap').footprintBytes());
      assert.deepEqual(runsOf(set), [0, cap]);
    }
  }
});

test('pages past the capacity are never members, even when the short last chunk is full', () => {
  for (const cap of [1, 31, 33, 4097, 3 * CHUNK + 17]) {
    const set = new PageSet(cap);
    set.addRange(0, cap);
    const end = Math.ceil(cap / CHUNK) * CHUNK;
    for (const p of [cap, cap + 1, end - 1, end, 2 ** 32, 2 ** 32 + 1, -1, -(2 ** 32), NaN, Infinity]) {
      assert.equal(set.has(p), false, `cap ${cap}: has(${p})`);
      assert.equal(set.delete(p), false, `cap ${cap}: delete(${p})`);
      assert.throws(() => set.add(p), RangeError, `cap ${cap}: add(${p})`);
      if (p >= cap) {
        assert.equal(set.next(p), -1, `cap ${cap}: next(${p})`);
        assert.equal(set.nextAbsent(p), cap, `cap ${cap}: nextAbsent(${p})`);
      }
    }
    assert.equal(set.size, cap);
    assert.deepEqual(runsOf(set), [0, cap]);
    // same on an empty set: nextAbsent never points past the capacity
    const empty = new PageSet(cap);
    assert.equal(empty.nextAbsent(cap), cap);
    assert.equal(empty.nextAbsent(end - 1), cap);
    assert.equal(empty.next(end - 1), -1);
  }
});

test('add() rejects anything that is not a page of the set with a RangeError', () => {
  const set = new PageSet(100);
  for (const p of [-1, 100, 101, 4096, 2 ** 32, 2 ** 32 + 5, NaN, Infinity, -Infinity, 1.5, -0.5]) {
    assert.throws(() => set.add(p), RangeError, `add(${p})`);
    assert.equal(set.delete(p), false, `delete(${p})`);
    assert.equal(set.has(p), false, `has(${p})`);
  }
  assert.equal(set.size, 0);
  assert.deepEqual(runsOf(set), []);
  const zero = new PageSet(0);
  assert.throws(() => zero.add(0), RangeError);
  assert.equal(zero.delete(0), false);
  assert.equal(zero.addRange(0, 10), 0);
  assert.equal(zero.next(0), -1);
  assert.equal(zero.nextAbsent(0), 0);
  assert.equal(zero.takeRuns(0, 10, []), 0);
  // delete(NaN) must not remove page 0
  set.add(0);
  assert.equal(set.delete(NaN), false);
  assert.equal(set.has(0), true);
});

test('the constructor rejects capacities it cannot address', () => {
  for (const cap of [-1, 1.5, NaN, Infinity, 2 ** 32 + 1, 2 ** 40]) {
    assert.throws(() => new PageSet(cap), RangeError, `capacity ${cap}`);
  }
});

test('addRange and deleteRange across many chunks, clipped to [0, capacity)', () => {
  const cap = 10 * CHUNK + 123;
  const set = new PageSet(cap, 'bitmap');
  const base = set.footprintBytes();
  assert.equal(set.addRange(100, 8 * CHUNK + 7), 8 * CHUNK + 7 - 100);
  // only the two end chunks are partial
  assert.equal(set.bitmaps, 2);
  assert.ok(set.footprintBytes() - base >= 2 * BITMAP_BYTES);
  assert.deepEqual(runsOf(set), [100, 8 * CHUNK + 7 - 100]);
  assert.equal(set.addRange(0, 9 * CHUNK), 100 + CHUNK - 7);
  assert.equal(set.footprintBytes(), base);
  assert.equal(set.addRange(-1000, cap + 1000), cap - 9 * CHUNK);
  assert.equal(set.size, cap);
  assert.equal(set.addRange(-Infinity, Infinity), 0);
  assert.equal(set.countRange(-5, cap + 5), cap);
  assert.equal(set.deleteRange(-5, 3), 3);
  assert.equal(set.deleteRange(cap - 2, cap + 99), 2);
  assert.equal(set.addRange(50, 10), 0);
  assert.equal(set.deleteRange(50, 50), 0);
  assert.equal(set.countRange(60, 40), 0);
  assert.deepEqual(runsOf(set), [3, cap - 5]);
  assert.equal(set.deleteRange(CHUNK + 1, 9 * CHUNK - 1), 8 * CHUNK - 2);
  assert.deepEqual(runsOf(set), [3, CHUNK - 2, 9 * CHUNK - 1, cap - 2 - (9 * CHUNK - 1)]);
  const left = cap - 5 - (8 * CHUNK - 2);
  assert.equal(set.size, left);
  assert.equal(set.deleteRange(0, cap), left);
  assert.equal(set.size, 0);
  assert.equal(set.footprintBytes(), base);
});

test('addAll/deleteAll need sets of the same capacity and work on themselves', () => {
  const a = new PageSet(5000);
  assert.throws(() => a.addAll(new PageSet(5001)), RangeError);
  assert.throws(() => a.deleteAll(new PageSet(4999)), RangeError);
  a.addRange(10, 4500);
  a.add(4999);
  a.addAll(a);
  assert.deepEqual(runsOf(a), [10, 4490, 4999, 1]);
  a.deleteAll(a);
  assert.equal(a.size, 0);
  assert.deepEqual(runsOf(a), []);
});

test('takeRuns wraps around once and splits a run that straddles the start', () => {
  const set = new PageSet(3 * CHUNK);
  set.addRange(0, 10);
  set.addRange(CHUNK - 3, CHUNK + 3);
  set.add(3 * CHUNK - 1);
  const out: number[] = [];
  assert.equal(set.takeRuns(5, 100, out), 5 + 6 + 1 + 5);
  assert.deepEqual(out, [5, 5, CHUNK - 3, 6, 3 * CHUNK - 1, 1, 0, 5]);
  assert.equal(set.size, 0);

  set.addRange(0, 3 * CHUNK);
  const out2: number[] = [];
  assert.equal(set.takeRuns(CHUNK + 7, CHUNK, out2), CHUNK);
  assert.deepEqual(out2, [CHUNK + 7, CHUNK]);
  assert.equal(set.takeRuns(3 * CHUNK - 2, 4, out2), 4);
  assert.deepEqual(out2, [CHUNK + 7, CHUNK, 3 * CHUNK - 2, 2, 0, 2]);
  assert.equal(set.takeRuns(0, 0, out2), 0);
  assert.equal(set.takeRuns(0, -3, out2), 0);
  assert.equal(out2.length, 6);
  assert.equal(set.size, 3 * CHUNK - CHUNK - 4);
});

// ---------------------------------------------------------------------------------------------
// Footprint

/** Deterministic xorshift32 so the footprint numbers are reproducible. */
function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

test('footprint: a 2 GiB guest 90% filled by a range, with a few pages toggled, is under 8 KiB', () => {
  const cap = 524_288; // 2 GiB of 4 KiB pages
  const set = new PageSet(cap);
  const filled = Math.floor(cap * 0.9);
  assert.equal(set.addRange(0, filled), filled);
  assert.ok(set.footprintBytes() < 8192, `after addRange: ${set.footprintBytes()} bytes`);
  for (const p of [0, 77_777, 200_000, 400_000]) assert.equal(set.delete(p), true);
  for (const p of [filled + 1, cap - 1]) assert.equal(set.add(p), true);
  assert.equal(set.size, filled - 4 + 2);
  assert.ok(set.footprintBytes() < 8192, `after toggling: ${set.footprintBytes()} bytes`);
  // and toggling back gives the bitmaps up again
  for (const p of [0, 77_777, 200_000, 400_000]) set.add(p);
  for (const p of [filled + 1, cap - 1]) set.delete(p);
  assert.ok(set.footprintBytes() <= 4096, `after toggling back: ${set.footprintBytes()} bytes`);
});

test('footprint: a random set costs about one bit per page, and none once full or cleared', () => {
  const cap = 524_288;
  const set = new PageSet(cap);
  const next = rng(0x5eed);
  let expected = 0;
  for (let p = 0; p < cap; p++) if (next() & 1 && set.add(p)) expected++;
  assert.equal(set.size, expected);
  const bytes = set.footprintBytes();
  assert.ok(bytes >= cap / 8 && bytes <= (cap / 8) * 1.05, `random set: ${bytes} bytes`);
  set.addRange(0, cap);
  assert.ok(set.footprintBytes() <= 4096, `full set: ${set.footprintBytes()} bytes`);
  set.deleteRange(0, cap);
  assert.ok(set.footprintBytes() <= 4096, `emptied set: ${set.footprintBytes()} bytes`);
  for (let p = 0; p < cap; p += 3) set.add(p);
  set.clear();
  assert.equal(set.size, 0);
  assert.ok(set.footprintBytes() <= 4096, `cleared set: ${set.footprintBytes()} bytes`);
});

test('huge capacities: whole-chunk range operations need no bitmaps', () => {
  const cap = 2 ** 28 + 5; // 1 TiB guest
  const set = new PageSet(cap);
  for (let i = 0; i < 10; i++) {
    assert.equal(set.addRange(0, cap), cap);
    assert.equal(set.deleteRange(0, cap), cap);
  }
  set.addRange(0, cap);
  assert.equal(set.has(cap - 1), true);
  assert.equal(set.has(cap), false);
  assert.equal(set.nextAbsent(0), cap);
  assert.equal(set.countRange(0, cap), cap);
  assert.equal(set.delete(cap - 1), true);
  assert.equal(set.nextAbsent(0), cap - 1);
  assert.ok(set.footprintBytes() < 1024 * 1024, `${set.footprintBytes()} bytes`);
});

test('a run list that fragments turns into bitmaps and stays equal to the model', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 200, max: 3 * CHUNK + 17 }),
      // mostly short adds scattered over the set, so lists fragment past 64 runs often
      fc.array(
        fc.tuple(
          fc.nat(9).map((x) => x < 7),
          fc.nat(),
          fc.integer({ min: 1, max: 8 }),
        ),
        {
          minLength: 80,
          maxLength: 200,
        },
      ),
      (cap, ops) => {
        const set = new PageSet(cap);
        const model = new Model(cap);
        let peakRuns = 0;
        for (const [add, at, len] of ops) {
          const s = at % cap;
          const e = Math.min(cap, s + len);
          if (add) assert.equal(set.addRange(s, e), model.addRange(s, e));
          else assert.equal(set.deleteRange(s, e), model.deleteRange(s, e));
          const runs = model.runs().length / 2;
          peakRuns = Math.max(peakRuns, runs);
          if (set.representation === 'runs') assert.ok(runs <= 64, `${runs} runs kept as a list`);
          assert.equal(set.size, model.size);
        }
        if (peakRuns > 64) assert.equal(set.representation, 'bitmap', 'fragmented beyond 64 runs');
        assert.deepEqual(runsOf(set), model.runs());
        checkEverywhere(set, model);
      },
    ),
    { numRuns: 150 },
  );
});
