// Page contents on the wire: filling a batch from guest RAM and installing it elsewhere.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import type { PageBatch } from '../../src/engine/messages.ts';
import { GuestRam, INSTALLING, MISSING, PRESENT } from '../../src/guest/ram.ts';
import { fillBatch, foldSums, installBatch, pageSums, ramHashOffThread } from '../../src/host/pages.ts';

const PAGE = 4096;

test('a batch installs exactly the accepted pages, whatever the order of its runs', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 8, max: 96 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 6 })), { minLength: 1, maxLength: 6 }),
      fc.array(fc.boolean(), { minLength: 96, maxLength: 96 }),
      fc.array(fc.boolean(), { minLength: 96, maxLength: 96 }),
      (pages, rawRuns, zeroPages, accepted) => {
        const src = GuestRam.create(pages * PAGE, true);
        for (let p = 0; p < pages; p++) if (!zeroPages[p]) src.page(p).fill((p % 250) + 1);
        // disjoint runs in any order (a wrapped scan sends high pfns before low ones)
        const used = new Set<number>();
        const runs: number[] = [];
        for (const [start, len] of rawRuns) {
          const s = start % pages;
          let n = 0;
          while (n < len && s + n < pages && !used.has(s + n)) used.add(s + n++);
          if (n > 0) runs.push(s, n);
        }
        const batch: PageBatch = { kind: 'bulk', runs, pageCount: used.size, zeroCount: 0 };
        fillBatch(src, batch);
        assert.equal(batch.zeroCount, [...used].filter((p) => zeroPages[p]).length);
        // the destination accepts sub-runs of each run, listed in the batch's order (as its
        // engine reports them: a sub-run never spans two runs of the batch)
        const install: number[] = [];
        for (let k = 0; k < runs.length; k += 2) {
          let open = false;
          for (let p = runs[k]; p < runs[k] + runs[k + 1]; p++) {
            if (!accepted[p]) {
              open = false;
              continue;
            }
            if (open) install[install.length - 1]++;
            else install.push(p, 1);
            open = true;
          }
        }
        const dst = GuestRam.create(pages * PAGE, false);
        dst.bytes.fill(0xee); // stale contents: what is not installed must stay as it was
        const sums = new Uint32Array(pages);
        installBatch(dst, batch, install, sums);
        const want = pageSums(src);
        for (let p = 0; p < pages; p++) {
          const installed = used.has(p) && accepted[p];
          assert.equal(dst.isPresent(p), installed, `page ${p} presence`);
          if (installed) {
            assert.deepEqual(dst.page(p), src.page(p), `page ${p} contents`);
            assert.equal(sums[p], want[p], `page ${p} checksum`);
          } else
            assert.ok(
              dst.page(p).every((b) => b === 0xee),
              `page ${p} left alone`,
            );
        }
      },
    ),
    { numRuns: 300 },
  );
});

test('claiming installs (postcopy with a fault thread): a page another thread has or is installing is left to it', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 64 }),
      fc.array(fc.constantFrom(MISSING, PRESENT, INSTALLING), { minLength: 64, maxLength: 64 }),
      fc.array(fc.boolean(), { minLength: 64, maxLength: 64 }),
      (pages, states, zeroPages) => {
        const src = GuestRam.create(pages * PAGE, true);
        for (let p = 0; p < pages; p++) if (!zeroPages[p]) src.page(p).fill((p % 250) + 1);
        const batch: PageBatch = { kind: 'bulk', runs: [0, pages], pageCount: pages, zeroCount: 0 };
        fillBatch(src, batch);
        const dst = GuestRam.create(pages * PAGE, false);
        dst.bytes.fill(0xee); // what another thread put (or is putting) there
        for (let p = 0; p < pages; p++) Atomics.store(dst.presence, p, states[p]);
        const sums = new Uint32Array(pages);
        const installed = installBatch(dst, batch, [0, pages], sums, undefined, true);
        const expected: number[] = [];
        for (let p = 0; p < pages; p++) {
          if (states[p] !== MISSING) {
            assert.equal(Atomics.load(dst.presence, p), states[p], `page ${p} state kept`);
            assert.ok(
              dst.page(p).every((b) => b === 0xee),
              `page ${p} left to the other thread`,
            );
            continue;
          }
          assert.ok(dst.isPresent(p), `page ${p} installed`);
          assert.deepEqual(dst.page(p), src.page(p));
          const n = expected.length;
          if (n > 0 && expected[n - 2] + expected[n - 1] === p) expected[n - 1]++;
          else expected.push(p, 1);
        }
        assert.deepEqual(installed, expected, 'the runs installed are reported');
      },
    ),
    { numRuns: 200 },
  );
});

test('a page being installed by another thread: waits end when that thread marks it present', async () => {
  const ram = GuestRam.create(4 * PAGE, false);
  assert.equal(ram.claim(2), true, 'missing: this thread may install it');
  assert.equal(ram.claim(2), false, 'claimed once only');
  assert.equal(ram.isPresent(2), false, 'not present while it is copied in');
  assert.equal(ram.waitPresent(2, 5), false, 'a wait times out while it is being installed');
  // another thread finishes the install 30 ms from now (as markPresent does: store, notify)
  const finisher = () =>
    new Worker(
      `const { workerData: p } = require('node:worker_threads');
       const a = new Int32Array(p);
       Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30);
       Atomics.store(a, 2, ${PRESENT}); Atomics.notify(a, 2);`,
      { eval: true, workerData: ram.buffers.presence },
    );
  let w = finisher();
  let t0 = performance.now();
  assert.equal(ram.waitPresent(2, 5000), true, 'the wait ends with the page present');
  assert.ok(performance.now() - t0 < 4000, 'woken, not timed out');
  await w.terminate();
  assert.equal(ram.claim(2), false, 'present: nothing to claim');
  Atomics.store(ram.presence, 2, INSTALLING);
  w = finisher();
  t0 = performance.now();
  ram.settleInstalls();
  assert.equal(ram.isPresent(2), true, 'settled: no page is being installed any more');
  await w.terminate();
});

test('two threads installing the same pages at once: each page is installed once, and what the guest wrote after is never overwritten', async () => {
  const pages = 512;
  const src = GuestRam.create(pages * PAGE, true);
  for (let p = 0; p < pages; p++) src.page(p).fill((p % 200) + 1);
  // every page travels twice: in the push's order and, reversed, as demand answers
  const batchesOf = (order: number[]) =>
    order.map((p) => {
      const b: PageBatch = { kind: 'bulk', runs: [p, 1], pageCount: 1, zeroCount: 0 };
      fillBatch(src, b);
      return { ...b, frame: undefined, data: b.data?.slice() };
    });
  const forward = [...Array(pages).keys()];
  for (let round = 0; round < 3; round++) {
    const dst = GuestRam.create(pages * PAGE, false);
    const sums = new Uint32Array(new SharedArrayBuffer(pages * 4));
    const other = new Worker(new URL('../support/install-worker.mjs', import.meta.url), {
      workerData: {
        ram: dst.buffers,
        sums: sums.buffer,
        batches: batchesOf([...forward].reverse()),
        mark: 0xf1,
      },
    });
    const theirs = new Promise<number[]>((resolve, reject) => {
      other.once('message', resolve);
      other.once('error', reject);
    });
    const mine: number[] = [];
    for (const b of batchesOf(forward)) {
      const runs = installBatch(dst, b, b.runs, sums, undefined, true);
      for (let i = 0; i < runs.length; i += 2)
        for (let p = runs[i]; p < runs[i] + runs[i + 1]; p++) {
          dst.page(p)[0] = 0xf0; // the guest writes it as soon as it is here
          mine.push(p);
        }
    }
    const installedThere = await theirs;
    await other.terminate();
    assert.equal(mine.length + installedThere.length, pages, 'every page installed exactly once');
    assert.equal(new Set([...mine, ...installedThere]).size, pages);
    for (let p = 0; p < pages; p++) {
      assert.ok(dst.isPresent(p), `page ${p} present`);
      const expected = Buffer.from(src.page(p));
      expected[0] = mine.includes(p) ? 0xf0 : 0xf1;
      assert.deepEqual(
        Buffer.from(dst.page(p)),
        expected,
        `page ${p}: the installer's copy, then the guest's write, nothing after`,
      );
    }
  }
});

test('into a new VM, zero pages are not even looked at, and every page ends as last sent', () => {
  fc.assert(
    fc.property(
      // rounds of (page, contents): 0 is a zero page, else a fill byte
      fc.array(fc.array(fc.tuple(fc.nat({ max: 11 }), fc.nat({ max: 3 })), { minLength: 1, maxLength: 8 }), {
        minLength: 1,
        maxLength: 6,
      }),
      (rounds) => {
        const pages = 12;
        const src = GuestRam.create(pages * PAGE, true);
        const dst = GuestRam.create(pages * PAGE, false);
        const sums = new Uint32Array(pages);
        const written = new Uint8Array(pages);
        const last = new Map<number, number>();
        let looks = 0;
        const look = dst.isZeroPage.bind(dst);
        dst.isZeroPage = (p: number) => {
          looks++;
          return look(p);
        };
        for (const round of rounds) {
          const pfns = [...new Map(round).entries()].sort((a, b) => a[0] - b[0]);
          for (const [p, fill] of pfns) {
            src.page(p).fill(fill);
            last.set(p, fill);
          }
          const runs = pfns.flatMap(([p]) => [p, 1]);
          const batch: PageBatch = { kind: 'bulk', runs, pageCount: pfns.length, zeroCount: 0 };
          fillBatch(src, batch);
          installBatch(dst, batch, runs, sums, written);
        }
        assert.equal(looks, 0, 'the bitmap answers for every zero page');
        for (const [p, fill] of last) {
          assert.ok(
            dst.page(p).every((b) => b === fill),
            `page ${p} holds ${fill}`,
          );
          assert.equal(written[p], fill === 0 ? 0 : 1);
        }
      },
    ),
    { numRuns: 300 },
  );
});

test('the folded checksum names every page and its place', () => {
  const ram = GuestRam.create(8 * PAGE, true);
  const before = foldSums(pageSums(ram));
  ram.page(3)[7] = 1;
  const changed = foldSums(pageSums(ram));
  assert.notEqual(changed, before);
  ram.page(3)[7] = 0;
  ram.page(4)[7] = 1; // the same change on another page
  assert.notEqual(foldSums(pageSums(ram)), changed);
});

test('checksums taken off the main thread, several at once, match those taken here', async () => {
  const rams = [1, 2, 3].map((k) => {
    const ram = GuestRam.create(16 * PAGE, true);
    for (let p = 0; p < 16; p += k) ram.page(p)[p] = k;
    return ram;
  });
  const hashes = await Promise.all(rams.map((r) => ramHashOffThread(r)));
  assert.deepEqual(
    hashes,
    rams.map((r) => foldSums(pageSums(r))),
  );
  assert.equal(new Set(hashes).size, 3);
  // the same thread takes the next one
  assert.equal(await ramHashOffThread(rams[0]), hashes[0]);
});

test('the checksum thread keeps no process alive once idle', () => {
  const url = (f: string) => JSON.stringify(new URL(f, import.meta.url).href);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-hash-'));
  try {
    // a file, not --eval: the worker inherits the options, and --input-type is for --eval only
    const script = join(dir, 'hash.mts');
    writeFileSync(
      script,
      `import { GuestRam } from ${url('../../src/guest/ram.ts')};
import { ramHashOffThread } from ${url('../../src/host/pages.ts')};
console.log(await ramHashOffThread(GuestRam.create(4096, true)));`,
    );
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.error, undefined, 'the process exited on its own');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout.trim(), /^[0-9a-f]{16}$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the dirty log records writes and a sync clears it', async () => {
  const { PageSet } = await import('../../src/engine/page-set.ts');
  const ram = GuestRam.create(100 * PAGE, true);
  for (const p of [0, 31, 32, 99, 31]) ram.logWrite(p);
  const into = new PageSet(100);
  assert.equal(ram.syncDirty(into), 4);
  assert.deepEqual(into.toRuns(), [0, 1, 31, 2, 99, 1]);
  const again = new PageSet(100);
  assert.equal(ram.syncDirty(again), 0);
});
