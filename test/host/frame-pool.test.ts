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
  const small = pool.take(100); // a control message: pooling would waste the rest
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
