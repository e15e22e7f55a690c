// A frame's checksum assembled from its pages' checksums, and those kept for the install.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { Decoder, Encoder } from '../../src/engine/codec.ts';
import type { PageBatch } from '../../src/engine/messages.ts';
import { GuestRam } from '../../src/guest/ram.ts';
import { crc32 as foldedCrc32 } from '../../src/host/crc32.ts';
import { appendPageCrc, frameChecksum, pageCrcs } from '../../src/host/page-sums.ts';
import { fillBatch, installBatch, pageSums } from '../../src/host/pages.ts';

const PAGE = 4096;
const bytesOf = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });

test("the hosts' CRC-32 is zlib's, from any start, on any view of shared memory", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 20_000 }), fc.nat(), fc.nat({ max: 15 }), (bytes, seed, at) => {
      const shared = new Uint8Array(new SharedArrayBuffer(bytes.length + at));
      shared.set(bytes, at);
      const view = shared.subarray(at);
      assert.equal(foldedCrc32(view), crc32(bytes));
      assert.equal(foldedCrc32(view, seed >>> 0), crc32(bytes, seed >>> 0));
    }),
  );
});

test('appending a page to a checksum gives the checksum of both', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 9000 }), bytesOf(PAGE), (a, b) => {
      const both = new Uint8Array(a.length + b.length);
      both.set(a);
      both.set(b, a.length);
      assert.equal(appendPageCrc(crc32(a), crc32(b)), crc32(both));
    }),
  );
});

test('the frame checksum is the CRC-32 of the body and keeps its tail pages’ checksums', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 5000 }),
      fc.integer({ min: 0, max: 5 }),
      fc.integer({ min: 0, max: 64 }),
      (head, pages, offset) => {
        const buffer = new Uint8Array(offset + head + pages * PAGE + 7);
        for (let i = 0; i < buffer.length; i++) buffer[i] = (i * 2654435761) >>> 24;
        const body = buffer.subarray(offset, offset + head + pages * PAGE);
        assert.equal(frameChecksum(body), crc32(body));
        if (pages === 0) return;
        const data = body.subarray(head);
        const known = pageCrcs(data);
        // head ≥ a page: the blocks counted from the end still cover the data's pages
        assert.ok(known, 'the data at the end of the body has known checksums');
        assert.deepEqual(
          [...known],
          Array.from({ length: pages }, (_, k) => crc32(data.subarray(k * PAGE, (k + 1) * PAGE))),
        );
        assert.equal(pageCrcs(body.subarray(head, head + PAGE * (pages - 1))), undefined, 'not the tail');
      },
    ),
  );
});

test('every body checked in a buffer keeps its pages’ checksums until they are taken, once', () => {
  // two frames read into one chunk, each ending with two pages
  const buffer = new Uint8Array(5 * PAGE);
  for (let i = 0; i < buffer.length; i++) buffer[i] = (i * 7) >> 3;
  const first = buffer.subarray(0, 2 * PAGE + 10);
  const second = buffer.subarray(2 * PAGE + 20, 4 * PAGE + 40);
  frameChecksum(first);
  frameChecksum(second);
  const sumsOf = (pages: Uint8Array) =>
    Uint32Array.of(crc32(pages.subarray(0, PAGE)), crc32(pages.subarray(PAGE)));
  assert.deepEqual(pageCrcs(second.subarray(20)), sumsOf(second.subarray(20)));
  assert.deepEqual(pageCrcs(first.subarray(10)), sumsOf(first.subarray(10)));
  assert.equal(pageCrcs(first.subarray(10)), undefined, 'taken once');
  frameChecksum(first);
  frameChecksum(buffer.subarray(2 * PAGE, 2 * PAGE + 10)); // a small frame ending where it did
  assert.equal(pageCrcs(first.subarray(10)), undefined, 'no stale checksums');
});

test('pages through the codec install with the checksums the lane computed, and a flipped bit is caught', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 24 }),
      fc.nat(),
      (kinds, flip) => {
        // kinds: 0 zero page, else a page of that fill
        const pages = kinds.length;
        const src = GuestRam.create(pages * PAGE, true);
        kinds.forEach((k, p) => {
          if (k) src.page(p).fill(k * 31 + p);
        });
        const batch: PageBatch = { kind: 'bulk', runs: [0, pages], pageCount: pages, zeroCount: 0 };
        fillBatch(src, batch);
        const frame = new Encoder().encode({ type: 'pages', batch });
        const r = new Decoder({ checksum: frameChecksum }).push(frame.slice());
        assert.equal(r.error, undefined);
        const got = r.frames[0].message;
        assert.ok(got.type === 'pages');
        const dst = GuestRam.create(pages * PAGE, false);
        const sums = new Uint32Array(pages);
        installBatch(dst, got.batch, [0, pages], sums);
        assert.deepEqual(sums, pageSums(src));
        assert.deepEqual(dst.bytes, src.bytes);

        const bad = frame.slice();
        bad[4 + (flip % (bad.length - 8))] ^= 1 << (flip % 8);
        const e = new Decoder({ checksum: frameChecksum }).push(bad);
        assert.equal(e.frames.length, 0);
        assert.ok(e.error, 'the corrupted frame is refused');
      },
    ),
    { numRuns: 200 },
  );
});
