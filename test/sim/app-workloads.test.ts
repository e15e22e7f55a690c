// The `kv` and `http` workloads against the real apps they stand for: the pages a modelled
// request touches are compared with the pages the app's own code touches serving the same
// request on a region laid out as Ferry's host lays it out, and the models' operations keep
// the TaskClass contract (pages in use, writes last).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { HttpServer } from '../../src/apps/http.ts';
import { classSize, KvStore } from '../../src/apps/kv.ts';
import { ArrayAccess, type GuestAccess } from '../../src/guest/access.ts';
import { kernelPages } from '../../src/guest/machine.ts';
import { Rng } from '../../src/sim/rng.ts';
import { parseScenario, ScenarioError, validateScenario } from '../../src/sim/scenario.ts';
import {
  HTTP_DEFAULTS,
  HttpLayout,
  httpModel,
  KV_DEFAULTS,
  KvLayout,
  kvModel,
  type Operation,
} from '../../src/sim/workloads.ts';
import { simulate } from '../../src/sim/world.ts';

const PAGE = 4096;
const pageOf = (byte: number) => Math.floor(byte / PAGE);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);
const sorted = (xs: Iterable<number>) => [...new Set(xs)].sort((a, b) => a - b);
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
/** redis-benchmark's name for key i. */
const keyName = (i: number) => `key:${String(i).padStart(12, '0')}`;

/** Guest RAM that records the pages each access reads and writes. */
class Recording implements GuestAccess {
  readonly reads = new Set<number>();
  readonly writes = new Set<number>();
  constructor(readonly inner: ArrayAccess) {}
  get size(): number {
    return this.inner.size;
  }
  private mark(into: Set<number>, addr: number, len: number): void {
    for (let p = pageOf(addr); len > 0 && p <= pageOf(addr + len - 1); p++) into.add(p);
  }
  read(addr: number, len: number): Uint8Array {
    this.mark(this.reads, addr, len);
    return this.inner.read(addr, len);
  }
  write(addr: number, b: Uint8Array): void {
    this.mark(this.writes, addr, b.length);
    this.inner.write(addr, b);
  }
  readU32(addr: number): number {
    this.mark(this.reads, addr, 4);
    return this.inner.readU32(addr);
  }
  writeU32(addr: number, value: number): void {
    this.mark(this.writes, addr, 4);
    this.inner.writeU32(addr, value);
  }
  clear(): void {
    this.reads.clear();
    this.writes.clear();
  }
  touched(): number[] {
    return sorted([...this.reads, ...this.writes]);
  }
}

/** The app's region in a VM of `ramPages` as Ferry's host gives it: RAM less the kernel's pages. */
const region = (ramPages: number, vcpus: number) =>
  new Recording(new ArrayAccess(new Uint8Array((ramPages - kernelPages(vcpus)) * PAGE)));

const written = (op: Operation) => op.pages.slice(op.pages.length - op.writes);

/** An Rng that remembers its last whole-number draw (the key, object or counter picked). */
class SpyRng extends Rng {
  last = -1;
  override int(n: number): number {
    this.last = super.int(n);
    return this.last;
  }
}

test('kv: header, bucket table, heap and every entry sit where KvStore puts them, and a request touches the pages the store touches', () => {
  let firstInChain = 0;
  let oom = 0;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 3000 }),
      fc.integer({ min: 1, max: 1200 }),
      (ramMiB, vcpus, valueBytes, keys) => {
        const ramPages = ramMiB * 256;
        const layout = new KvLayout({ ...KV_DEFAULTS, keys, valueBytes }, ramPages, ramPages, vcpus);
        const mem = region(ramPages, vcpus);
        const store = KvStore.format(mem);
        const st = store.stats();
        assert.equal(layout.regionBytes, store.size);
        assert.equal(layout.buckets, st.buckets);
        assert.equal(layout.heapStart, store.size - st.heapBytes);
        // fill in key order, as far as the store holds them
        const n = Math.min(keys, layout.stored);
        const value = new Uint8Array(valueBytes).fill(120);
        for (let i = 0; i < n; i++)
          assert.equal(text(store.execute([bytes('SET'), bytes(keyName(i)), value])), '+OK\r\n');
        if (keys > layout.stored) {
          // the model's capacity is the store's: the next key does not fit
          const reply = text(store.execute([bytes('SET'), bytes(keyName(n)), value]));
          assert.match(reply, /^-OOM/);
          oom++;
        }
        // where the store put each key: walk its blocks
        const ram = mem.inner;
        const at = new Map<string, number>();
        const bump = layout.heapStart + store.stats().bumpBytes;
        for (let b = layout.heapStart; b < bump; b += classSize(ram.readU32(b)))
          at.set(text(ram.read(b + 20, ram.readU32(b + 12))), b);
        assert.equal(at.size, n);
        const step = Math.max(1, Math.floor(n / 40));
        const other = new Uint8Array(valueBytes).fill(121);
        for (let i = 0; i < n; i += step) {
          const block = at.get(keyName(i))!;
          assert.equal(block, layout.heapStart + i * layout.blockSize, `key ${i}'s block`);
          assert.equal(classSize(ram.readU32(block)), layout.blockSize);
          const bucket = ram.readU32(block + 8) & (st.buckets - 1);
          assert.equal(layout.bucketOf(i), bucket, `key ${i}'s bucket`);
          // the store walks the chain from the bucket: the model leaves out entries ahead
          const first = ram.readU32(512 + 4 * bucket) === block;
          if (first) firstInChain++;
          const check = (op: Operation, args: Uint8Array[]) => {
            mem.clear();
            const reply = store.execute(args);
            assert.equal(op.replyBytes, reply.length, `key ${i}: ${text(args[0])} reply bytes`);
            const model = sorted(op.pages);
            if (first) assert.deepEqual(model, mem.touched(), `key ${i}: ${text(args[0])} pages`);
            else for (const p of model) assert.ok(mem.touched().includes(p), `key ${i}: page ${p}`);
            assert.deepEqual(sorted(written(op)), sorted(mem.writes), `key ${i}: ${text(args[0])} writes`);
          };
          const get = layout.op(i, false, true);
          check(get, [bytes('GET'), bytes(keyName(i))]);
          assert.equal(get.writes, 0);
          const set = layout.op(i, true, true);
          check(set, [bytes('SET'), bytes(keyName(i)), other]);
          // a SET writes the entry's pages from its value on, and reads the rest of them
          assert.deepEqual(written(set), range(pageOf(block + 36), pageOf(block + 36 + valueBytes - 1)));
          assert.deepEqual(set.pages.slice(1), range(pageOf(block), pageOf(block + 36 + valueBytes - 1)));
          assert.deepEqual(layout.op(i, true, false).pages, written(set));
          assert.deepEqual(layout.op(i, false, false).pages, []);
        }
      },
    ),
    { numRuns: 40 },
  );
  assert.ok(firstInChain > 100, `${firstInChain} keys compared page for page`);
  assert.ok(oom > 0, 'some runs filled the store');
});

test('http: the object table, every object and the counters sit where HttpServer puts them, and a request touches the pages the server touches', () => {
  let dropped = 0;
  fc.assert(
    fc.property(
      fc.integer({ min: 256, max: 1280 }),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 320 }),
      fc.integer({ min: 1, max: 4000 }),
      (ramPages, vcpus, objects, counters) => {
        const layout = new HttpLayout({ ...HTTP_DEFAULTS, objects, counters }, ramPages, ramPages, vcpus);
        const mem = region(ramPages, vcpus);
        const server = HttpServer.format(mem, { objects, counters });
        assert.equal(layout.objects, server.objects);
        if (server.objects < objects) dropped++;
        const ram = mem.inner;
        const step = Math.max(1, Math.floor(objects / 30));
        for (let i = 0; i < objects; i += step) {
          const get = layout.get(i, true);
          mem.clear();
          const replyBytes = server.execute([bytes('GET'), bytes(`/obj/${i}`), new Uint8Array()]);
          const reply = text(replyBytes);
          assert.match(reply, i < server.objects ? /^HTTP\/1\.1 200/ : /^HTTP\/1\.1 404/);
          assert.equal(get.replyBytes, replyBytes.length, `object ${i}: reply bytes`);
          assert.deepEqual(sorted(get.pages), mem.touched(), `object ${i}: pages`);
          assert.deepEqual(sorted(written(get)), sorted(mem.writes), `object ${i}: writes`);
          assert.deepEqual(written(get), [0], 'the requests counter');
          if (i < server.objects) {
            // the table entry's page, then the object's pages as the table places it
            const entry = 4096 + 8 * i;
            const offset = ram.readU32(entry);
            const length = ram.readU32(entry + 4);
            assert.deepEqual(get.pages, [
              pageOf(entry),
              ...range(pageOf(offset), pageOf(offset + length - 1)),
              0,
            ]);
          } else assert.deepEqual(get.pages, [0]);
          assert.deepEqual(layout.get(i, false).pages, [0]);
        }
        for (let k = 0; k < counters; k += Math.max(1, Math.floor(counters / 20))) {
          const hit = layout.hit(k);
          mem.clear();
          const replyBytes = server.execute([bytes('POST'), bytes(`/hit/${k}`), new Uint8Array()]);
          const reply = text(replyBytes);
          assert.match(reply, /^HTTP\/1\.1 200/);
          // the counter's value has 1 digit here, the model assumes 4
          assert.ok(Math.abs(hit.replyBytes! - replyBytes.length) <= 3, `counter ${k}: reply bytes`);
          assert.deepEqual(sorted(hit.pages), mem.touched(), `counter ${k}: pages`);
          assert.deepEqual(sorted(written(hit)), sorted(mem.writes), `counter ${k}: writes`);
          assert.equal(hit.writes, hit.pages.length);
        }
      },
    ),
    { numRuns: 30 },
  );
  assert.ok(dropped > 0, 'some regions were too small for every object');
});

/** The operation's pages are whole pages in RAM in use, and its writes are some of them. */
function inUse(op: Operation, usedPages: number, what: string): void {
  assert.ok(op.writes >= 0 && op.writes <= op.pages.length, `${what}: ${op.writes} writes`);
  for (const p of op.pages)
    assert.ok(Number.isInteger(p) && p >= 0 && p < usedPages, `${what}: page ${p} of ${usedPages}`);
}

test('kv model: pages in use, writes last; a GET is a bucket page and the entry’s 1 or 2 pages, a SET writes the entry’s value pages', () => {
  let gets = 0;
  let sets = 0;
  fc.assert(
    fc.property(
      fc.integer({ min: 256, max: 256 * 512 }),
      fc.double({ min: 0.001, max: 1, noNaN: true }),
      fc.integer({ min: 1, max: 8 }),
      fc.integer({ min: 1, max: 200000 }),
      fc.integer({ min: 1, max: 4060 }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.integer(),
      (ramPages, usedShare, vcpus, keys, valueBytes, setRatio, seed) => {
        const usedPages = Math.max(1, Math.round(ramPages * usedShare));
        const p = { ...KV_DEFAULTS, keys, valueBytes, setRatio };
        const model = kvModel(p, usedPages, ramPages, vcpus);
        const layout = new KvLayout(p, usedPages, ramPages, vcpus);
        assert.equal(model.kind, 'kv');
        const rng = new SpyRng(seed);
        for (let n = 0; n < 200; n++) {
          const reads = n % 4 !== 3;
          const op = model.tasks[0].next(rng, reads);
          const key = rng.last;
          inUse(op, usedPages, `key ${key}`);
          assert.equal(op.cpuMs, p.cpuMs);
          // a stored key's SET writes its value; an absent key's SET is refused (out of memory)
          const set = key < layout.stored ? op.writes > 0 : op.replyBytes !== 5;
          if (reads && key >= layout.stored) assert.equal(op.pages.length, set ? 2 : 1);
          assert.deepEqual(op, layout.op(key, set, reads));
          // what a request writes is what it lists without its reads
          assert.deepEqual(layout.op(key, set, false).pages, written(op));
          if (!reads) assert.equal(op.pages.length, op.writes);
          if (!reads || key >= layout.stored) continue;
          const block = layout.heapStart + key * layout.blockSize;
          const entry = range(pageOf(block), pageOf(block + layout.entryBytes - 1));
          assert.ok(entry.length === 1 || entry.length === 2);
          assert.ok(entry[0] >= pageOf(layout.heapStart));
          assert.ok(
            op.pages[0] >= pageOf(512) && op.pages[0] <= pageOf(layout.heapStart - 1),
            'a bucket page',
          );
          assert.equal(op.pages[0], layout.bucketPage(key));
          assert.deepEqual(op.pages.slice(1), entry);
          if (set) {
            sets++;
            assert.deepEqual(written(op), range(pageOf(block + 36), entry.at(-1)!));
          } else {
            gets++;
            assert.equal(op.writes, 0);
          }
        }
      },
    ),
    { numRuns: 150 },
  );
  // both kinds were checked (how many depends on the draws: 86 stored-key SETs were seen)
  assert.ok(gets > 500 && sets > 20, `${gets} GETs, ${sets} SETs of stored keys`);
});

test('kv model: keys beyond the RAM in use are absent, and the bucket table folds into a tiny RAM in use', () => {
  const p = { ...KV_DEFAULTS, keys: 100000, valueBytes: 1000 };
  const ramPages = 64 * 256;
  const layout = new KvLayout(p, ramPages, ramPages, 1);
  // 64 MiB less one kernel page: 2^18 buckets (a 1 MiB table), 1536-byte blocks
  assert.equal(layout.buckets, 2 ** 18);
  assert.equal(layout.blockSize, 1536);
  assert.equal(layout.stored, Math.floor((layout.regionBytes - layout.heapStart) / 1536));
  assert.ok(layout.stored < p.keys);
  const absent = layout.stored;
  assert.deepEqual(layout.op(absent, false, true), {
    cpuMs: p.cpuMs,
    pages: [layout.bucketPage(absent)],
    writes: 0,
    replyBytes: 5, // $-1 (nil)
  });
  assert.deepEqual(layout.op(absent, true, true).pages, [layout.bucketPage(absent), 0]);
  assert.equal(layout.op(absent, true, true).writes, 0);
  // the store in 8 pages in use: no key fits, bucket slots fold into them
  const tiny = new KvLayout(p, 8, ramPages, 1);
  assert.equal(tiny.stored, 0);
  const pages = new Set<number>();
  for (let i = 0; i < 2000; i++) pages.add(tiny.bucketPage(i));
  assert.deepEqual(sorted(pages), range(0, 7));
});

test('http model: pages in use, writes last; a GET reads the table entry and the object and writes the header, a hit writes the header and its counter', () => {
  let gets = 0;
  let hits = 0;
  fc.assert(
    fc.property(
      fc.integer({ min: 256, max: 256 * 64 }),
      fc.double({ min: 0.0001, max: 1, noNaN: true }),
      fc.integer({ min: 1, max: 8 }),
      fc.integer({ min: 1, max: 2000 }),
      fc.integer({ min: 1, max: 100000 }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.integer(),
      (ramPages, usedShare, vcpus, objects, counters, hitRatio, seed) => {
        const usedPages = Math.max(1, Math.round(ramPages * usedShare));
        const p = { ...HTTP_DEFAULTS, objects, counters, hitRatio };
        const model = httpModel(p, usedPages, ramPages, vcpus);
        const layout = new HttpLayout(p, usedPages, ramPages, vcpus);
        assert.equal(model.kind, 'http');
        const rng = new SpyRng(seed);
        for (let n = 0; n < 100; n++) {
          const reads = n % 4 !== 3;
          const op = model.tasks[0].next(rng, reads);
          inUse(op, usedPages, `request ${n}`);
          if (op.writes === 2) {
            hits++;
            assert.deepEqual(op, layout.hit(rng.last));
            assert.equal(op.pages[0], 0);
            continue;
          }
          gets++;
          assert.deepEqual(op, layout.get(rng.last, reads));
          assert.equal(op.writes, 1);
          assert.deepEqual(written(op), [0], 'the requests counter');
          if (!reads) assert.deepEqual(op.pages, [0]);
          else if (rng.last < layout.objects && layout.counterTable + 4 * counters <= usedPages * PAGE) {
            assert.equal(op.pages[0], pageOf(4096 + 8 * rng.last), 'the table entry');
            const object = op.pages.slice(1, -1);
            assert.deepEqual(object, range(object[0], object.at(-1)!), 'the object, contiguous');
          }
        }
      },
    ),
    { numRuns: 150 },
  );
  // both kinds of request checked many times (the hit ratios drawn lean towards 0 and 1:
  // hits ran from 901 to a few thousand of the 15,000)
  assert.ok(gets > 100 && hits > 100, `${gets} GETs, ${hits} hits`);
});

/**
 * A kv VM on host `src` (64 MiB, 1 vCPU, 20,000 keys) moved to `dst` at `atS`; `vm`,
 * `workload` and `migration` fields go over those.
 */
function kvMove(o: {
  atS: number;
  settleS: number;
  vm?: Record<string, unknown>;
  workload?: Record<string, unknown>;
  migration: Record<string, unknown>;
}) {
  return validateScenario({
    name: 'kv-move',
    settleS: o.settleS,
    hosts: [
      { name: 'src', nicMbps: 1000 },
      { name: 'dst', nicMbps: 1000 },
    ],
    vms: [
      {
        name: 'vm',
        host: 'src',
        ramMiB: 64,
        vcpus: 1,
        ...o.vm,
        workload: { kind: 'kv', keys: 20000, ...o.workload },
      },
    ],
    migrations: [{ vm: 'vm', to: 'dst', atS: o.atS, ...o.migration }],
  });
}

const kvScenario = (cooperative: boolean) =>
  kvMove({ atS: 2, settleS: 3, migration: { mode: 'postcopy', cooperative } });

test('a 64 MiB VM serving kv moved by postcopy: remote faults, work before the move, cooperative faults at least as good as blocking', () => {
  const runs = [true, false].map((cooperative) => {
    const r = simulate(kvScenario(cooperative), { seed: 1 });
    const m = r.migrations[0];
    const w = r.workloads[0];
    assert.equal(m.outcome, 'completed', m.reason);
    assert.equal(w.kind, 'kv');
    assert.ok(m.remoteFaults > 0, 'the requests fault on missing pages');
    const before = w.throughput.filter(([t]) => t + 100 <= m.startMs).reduce((n, [, ops]) => n + ops, 0);
    assert.ok(before > 0 && w.baselineOpsPerSec > 0, `${before} ops before the migration`);
    assert.ok(w.relativeThroughput, 'a baseline and a switchover');
    return w.relativeThroughput.first1s;
  });
  const [coop, blocking] = runs;
  assert.ok(coop >= blocking, `first second after switchover: cooperative ${coop}, blocking ${blocking}`);
});

test('scenario files: kv and http take their defaults, and a bad field is named', () => {
  const yaml = (workload: string) =>
    `hosts: [{ name: a, nicMbps: 1000 }]\nvms:\n  - { name: v, host: a, ramMiB: 64, workload: ${workload} }\n`;
  assert.deepEqual(parseScenario(yaml('{ kind: kv }')).vms[0].workload, { kind: 'kv', ...KV_DEFAULTS });
  assert.deepEqual(parseScenario(yaml('{ kind: http }')).vms[0].workload, { kind: 'http', ...HTTP_DEFAULTS });
  const rejects = (workload: string, message: RegExp) =>
    assert.throws(
      () => parseScenario(yaml(workload), 'kv.yaml'),
      (e: unknown) => e instanceof ScenarioError && message.test(e.message),
    );
  rejects('{ kind: kv, keys: 0 }', /^kv\.yaml: vms\[0\]\.workload\.keys: keys must be ≥ 1$/);
  rejects('{ kind: kv, setRatio: 2 }', /vms\[0\]\.workload\.setRatio: must be in \[0, 1\]/);
  rejects(
    '{ kind: kv, valueBytes: 1.5 }',
    /vms\[0\]\.workload\.valueBytes: value size must be a whole number/,
  );
  rejects('{ kind: http, objects: 70000 }', /vms\[0\]\.workload\.objects: objects must be ≤ 65536/);
  rejects('{ kind: http, hitRatio: -1 }', /vms\[0\]\.workload\.hitRatio: must be in \[0, 1\]/);
  rejects('{ kind: http, keys: 5 }', /vms\[0\]\.workload: unknown field 'keys'/);
});

test('the app models are deterministic: rebuilt, they draw the same requests from the same seed', () => {
  const a = kvModel(KV_DEFAULTS, 16384, 16384, 1).tasks[0];
  const b = kvModel(KV_DEFAULTS, 16384, 16384, 1).tasks[0];
  const ra = new Rng(5);
  const rb = new Rng(5);
  for (let i = 0; i < 100; i++) assert.deepEqual(a.next(ra, true), b.next(rb, true));
  const h = httpModel(HTTP_DEFAULTS, 16384, 16384, 1).tasks[0];
  const g = httpModel(HTTP_DEFAULTS, 16384, 16384, 1).tasks[0];
  for (let i = 0; i < 100; i++) assert.deepEqual(h.next(ra, true), g.next(rb, true));
});

test('the app lock: a second vCPU adds no request rate; a blocking fault stalls every vCPU', () => {
  const run = (vcpus: number, mode: 'precopy' | 'postcopy', cooperative = false) => {
    const scenario = kvMove({
      atS: 3,
      settleS: 2,
      vm: { vcpus },
      workload: { cpuMs: 0.2 },
      migration: { mode, cooperative },
    });
    const r = simulate(scenario, { seed: 1 });
    assert.equal(r.migrations[0].outcome, 'completed', r.migrations[0].reason);
    return r;
  };
  // handlers run one at a time: 2 vCPUs serve what 1 does (1000 / 0.2 ms = 5,000 requests/s)
  const one = run(1, 'precopy').workloads[0].baselineOpsPerSec;
  const two = run(2, 'precopy').workloads[0].baselineOpsPerSec;
  assert.ok(Math.abs(two / one - 1) < 0.1, `1 vCPU ${one}/s, 2 vCPUs ${two}/s`);
  assert.ok(Math.abs(one - 5000) < 500, `${one}/s`);
  // with blocking faults the vCPU that waits for a page keeps the lock: the other one idles
  // too, so blocked time shows on one vCPU at a time while the rest is halted
  const blocking = run(2, 'postcopy').migrations[0];
  const coop = run(2, 'postcopy', true).migrations[0];
  assert.ok(blocking.syncFaults > 0 && coop.asyncFaults > 0);
  assert.ok(
    blocking.vcpuBlockedMs <= blocking.postcopyMs * 1.05,
    `blocked ${blocking.vcpuBlockedMs} ms of ${blocking.postcopyMs} ms`,
  );
});

test('the request path: it sets the clients’ rate beside the guest, and a migration’s host contention slows it', () => {
  const run = (pathMs: number, hostContention: number, mode: 'precopy' | 'postcopy', demandDelayUs = 0) => {
    const scenario = kvMove({
      atS: 3,
      settleS: 1,
      vm: { ramMiB: 256, usedMiB: 200, hostContention },
      workload: { cpuMs: 0.02, connections: 16, pathMs },
      migration: { mode, cooperative: false, demandDelayUs },
    });
    const r = simulate(scenario, { seed: 1 });
    const m = r.migrations[0];
    assert.equal(m.outcome, 'completed', m.reason);
    const rate = (from: number, to: number) => {
      const bins = r.workloads[0].throughput.filter(([t]) => t >= from && t < to);
      return bins.reduce((n, [, ops]) => n + ops, 0) / bins.length;
    };
    // before the migration, and during its first second of precopy
    return { before: rate(1000, 2900), during: rate(3100, 4000), m };
  };
  // 16 clients, 2 ms on the path each: 8,000 requests/s whatever the (fast) guest
  const slow = run(2, 0, 'precopy');
  assert.ok(Math.abs(slow.before / 8000 - 1) < 0.05, `${slow.before} requests/s`);
  assert.ok(run(0, 0, 'precopy').before > 5 * slow.before, 'without a path the guest alone sets the rate');
  // hosts busy with the migration: the path takes twice as long, half the requests
  const busy = run(2, 1, 'precopy');
  assert.ok(Math.abs(busy.during / busy.before - 0.5) < 0.05, `${busy.before} → ${busy.during} requests/s`);
  // the demand delay adds to every demand's latency
  const quick = run(2, 0, 'postcopy').m;
  const delayed = run(2, 0, 'postcopy', 3000).m;
  assert.ok(
    delayed.faultLatencyUs.p50 - quick.faultLatencyUs.p50 >= 2900,
    `p50 ${quick.faultLatencyUs.p50} → ${delayed.faultLatencyUs.p50} µs`,
  );
});
