// Copies into and out of guest RAM (shared memory) with one memcpy.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { copyBytes } from '../../src/guest/ram.ts';

test('copyBytes copies any range into and out of shared memory, at any alignment, and nothing else', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 300 }),
      fc.nat(200),
      fc.nat(7),
      fc.boolean(),
      (bytes, at, skew, intoShared) => {
        const size = 512;
        const shared = Buffer.from(new SharedArrayBuffer(size)).fill(0xa5);
        const plain = Buffer.alloc(size + 8, 0x5a);
        const source = intoShared
          ? plain.subarray(skew, skew + bytes.length)
          : shared.subarray(skew, skew + bytes.length);
        source.set(bytes);
        const target = intoShared ? shared : plain;
        const before = Buffer.from(target);
        copyBytes(target, at, source);
        assert.deepEqual(target.subarray(at, at + bytes.length), Buffer.from(bytes));
        assert.deepEqual(target.subarray(0, at), before.subarray(0, at));
        assert.deepEqual(target.subarray(at + bytes.length), before.subarray(at + bytes.length));
      },
    ),
  );
});

test('copyBytes refuses a range past the end of its target', () => {
  const target = Buffer.from(new SharedArrayBuffer(64));
  assert.throws(() => copyBytes(target, 60, new Uint8Array(8)), RangeError);
});
