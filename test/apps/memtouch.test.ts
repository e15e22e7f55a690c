// memtouch: its options, and its two access patterns over guest RAM.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Memtouch, memtouchOptions } from '../../src/apps/memtouch.ts';
import { ArrayAccess } from '../../src/guest/access.ts';

const PAGE = 4096;
const HEADER = PAGE;

/** Pages whose stamp says the step that wrote them, by page number. */
function stamps(ram: Uint8Array, pages: number): Map<number, number> {
  const v = new DataView(ram.buffer);
  const out = new Map<number, number>();
  for (let p = 0; p < pages; p++) {
    const step = v.getUint32(HEADER + p * PAGE, true);
    if (step > 0) {
      assert.equal(v.getUint32(HEADER + p * PAGE + 4, true), p, `page ${p} carries its own number`);
      out.set(p, step);
    }
  }
  return out;
}

test('options: defaults filled in; a bad or unknown option is refused by name', () => {
  assert.equal(memtouchOptions({}).pattern, 'sequential');
  assert.equal(memtouchOptions({ pattern: 'random' }).pattern, 'random');
  assert.throws(
    () => memtouchOptions({ pattern: 'zigzag' }),
    /option 'pattern' must be sequential or random, got "zigzag"/,
  );
  assert.throws(() => memtouchOptions({ rate: 5 }), /unknown option 'rate' \(known: rateMBps,/);
  assert.throws(() => memtouchOptions({ rateMBps: 0 }), /option 'rateMBps'/);
  assert.throws(() => memtouchOptions({ pagesPerStep: 1.5 }), /option 'pagesPerStep'/);
  assert.throws(() => memtouchOptions({ workingSetBytes: 100 }), /option 'workingSetBytes'/);
  assert.throws(() => memtouchOptions({ prefill: 'yes' }), /option 'prefill' must be true or false/);
});

test('sequential: each step writes the next pages after the cursor, wrapping', () => {
  const ram = new Uint8Array(HEADER + 10 * PAGE);
  const o = memtouchOptions({ workingSetBytes: 10 * PAGE, pagesPerStep: 4 });
  const job = Memtouch.format(new ArrayAccess(ram), o);
  for (let i = 0; i < 3; i++) job.step();
  assert.deepEqual(job.progress(), { steps: 3, pagesWritten: 12 });
  // pages 0–3 step 1 then 0–1 again at step 3; 4–7 step 2; 8–9 step 3
  assert.deepEqual(
    [...stamps(ram, 10)],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((p) => [p, p < 2 || p >= 8 ? 3 : p < 4 ? 1 : 2]),
  );
});

test('random: pages drawn over the whole working set; the draw goes on where it was after a move', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 64 }),
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 0, max: 40 }),
      (pages, before, after) => {
        const o = memtouchOptions({ workingSetBytes: pages * PAGE, pagesPerStep: 3, pattern: 'random' });
        const ram = new Uint8Array(HEADER + pages * PAGE + PAGE); // a page past the working set
        const job = Memtouch.format(new ArrayAccess(ram), o);
        for (let i = 0; i < before; i++) job.step();
        // the RAM moves (a copy) and the job reopens there; the original carries on too
        const moved = ram.slice();
        const there = Memtouch.open(new ArrayAccess(moved), o);
        for (let i = 0; i < after; i++) {
          job.step();
          there.step();
        }
        assert.deepEqual(moved, ram);
        assert.ok(stamps(ram, pages + 1).get(pages) === undefined, 'nothing written past the working set');
        assert.equal(job.progress().pagesWritten, 3 * (before + after));
      },
    ),
  );
});

test('random: over many steps every page of the working set is hit, none far more than its share', () => {
  const pages = 64;
  const ram = new Uint8Array(HEADER + pages * PAGE);
  const job = Memtouch.format(
    new ArrayAccess(ram),
    memtouchOptions({ workingSetBytes: pages * PAGE, pagesPerStep: 1, pattern: 'random' }),
  );
  const hits = new Array<number>(pages).fill(0);
  const v = new DataView(ram.buffer);
  for (let s = 1; s <= 64 * 50; s++) {
    job.step();
    // the page this step wrote carries its number
    for (let p = 0; p < pages; p++) if (v.getUint32(HEADER + p * PAGE, true) === s) hits[p]++;
  }
  assert.ok(
    Math.min(...hits) > 20 && Math.max(...hits) < 90,
    `hits per page ${Math.min(...hits)}–${Math.max(...hits)} (50 expected)`,
  );
});
