// The pool of page-frame buffers: what it reuses, what it leaves alone.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { BATCH_PAGES, FramePool, framePool } from '../../src/host/frame-pool.ts';

test('a buffer given back is handed out again, at the size asked for', () => {
  const pool = new FramePool(1000, 4);
  const a = pool.take(900);
  assert.equal(a.length, 900);
  pool.give(a.subarray(100, 200)); // any view of it will do
  const b = pool.take(700);
  assert.equal(b.length, 700);
  assert.equal(b.buffer, a.buffer);
  assert.equal(pool.reused, 1);
});

test('small, oversized and foreign buffers are never pooled', () => {
  const pool = new FramePool(1000, 4);
  const small = pool.take(50); // a control message: pooling would waste the rest
  const big = pool.take(1001);
  pool.give(small);
  pool.give(big);
  pool.give(new Uint8Array(1000));
  pool.give(undefined);
  assert.equal(pool.free, 0);
  assert.notEqual(pool.take(1000).buffer, big.buffer);
  assert.equal(pool.reused, 0);
});

test('no buffer is out twice at once, whatever the order of takes and gives', () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.integer({ min: 250, max: 1000 }), fc.constant(-1), fc.constant(-2)), {
        maxLength: 60,
      }),
      fc.integer({ min: 1, max: 5 }),
      (ops, maxFree) => {
        const pool = new FramePool(1000, maxFree);
        const out: Uint8Array[] = [];
        for (const op of ops) {
          if (op > 0) {
            const b = pool.take(op);
            assert.ok(!out.some((o) => o.buffer === b.buffer), 'a buffer handed out twice');
            out.push(b);
          } else if (out.length > 0) {
            const b = out.splice(op === -1 ? 0 : out.length - 1, 1)[0];
            pool.give(b);
            pool.give(b); // given twice: still pooled once
          }
          assert.ok(pool.free <= maxFree);
        }
      },
    ),
  );
});

test("the process's pool holds a whole bulk frame", () => {
  const f = framePool.take(framePool.capacity);
  assert.equal(f.length, framePool.capacity);
  framePool.give(f);
  assert.ok(framePool.capacity > BATCH_PAGES * 4096);
});

test('a read never lands on a frame held or half read, and chunks come back once nothing holds them', () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.record({
            read: fc.integer({ min: 1, max: 64 }),
            hold: fc.integer({ min: 0, max: 3 }),
            // after a read the lane says where a frame is half read: 0 none, 1 one begun
            // in this read, 2 the one begun earlier goes on (frames span many reads);
            // -1: it does not say
            settle: fc.constantFrom(-1, 0, 1, 2, 2, 2, 2),
          }),
          fc.record({ give: fc.nat() }),
        ),
        { minLength: 40, maxLength: 300, size: 'max' },
      ),
      (ops) => {
        const pool = new FramePool(1000, 4);
        const reader = pool.reader(64);
        const held: Uint8Array[] = [];
        let halfRead: Uint8Array[] = []; // landed since the lane last said no frame is half read
        const chunks = new Set<ArrayBufferLike>();
        const overlaps = (a: Uint8Array, b: Uint8Array) =>
          a.buffer === b.buffer &&
          a.byteOffset < b.byteOffset + b.length &&
          b.byteOffset < a.byteOffset + a.length;
        for (const op of ops) {
          if ('read' in op) {
            const into = reader.next();
            chunks.add(into.buffer);
            assert.equal(into.length, 64);
            assert.ok(!held.some((h) => overlaps(h, into)), 'a read lands on a frame still held');
            assert.ok(!halfRead.some((h) => overlaps(h, into)), 'a read lands on a frame half read');
            reader.landed(op.read);
            // frames decoded in place: up to `hold` pieces of what landed
            const landed = into.subarray(0, op.read);
            halfRead.push(landed);
            for (let k = 0, at = 0; k < op.hold && at < op.read; k++, at += 8) {
              const frame = landed.subarray(at, Math.min(op.read, at + 8));
              reader.hold(frame);
              held.push(frame);
            }
            if (op.settle === 0) halfRead = [];
            else if (op.settle === 1) halfRead = [landed];
            if (op.settle >= 0) reader.settled(halfRead);
          } else if (held.length > 0) {
            const [frame] = held.splice(op.give % held.length, 1);
            pool.give(frame);
          }
        }
        reader.settled();
        for (const h of held.splice(0)) pool.give(h);
        // everything given back: the chunks the reader left are free (at most 16 kept)
        assert.equal(pool.freeChunks, Math.min(16, Math.max(0, chunks.size - 1)));
      },
    ),
  );
});
