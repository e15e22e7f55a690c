import assert from 'node:assert/strict';
import { test } from 'node:test';
import zlib from 'node:zlib';
import fc from 'fast-check';
import {
  type CodecError,
  DEFAULT_MAX_FRAME_BYTES,
  type DecodeResult,
  Decoder,
  type DecoderOptions,
  Encoder,
  encodeMessage,
  type Frame,
  FrameType,
  WIRE_VERSION,
} from '../../src/engine/codec.ts';
import { crc32 } from '../../src/engine/crc32.ts';
import { type Message, PAGE_SIZE, type PageBatch, type PageKind } from '../../src/engine/messages.ts';
import { fillPages } from '../support/page-data.ts';

// ---------------------------------------------------------------------------------------
// Arbitraries

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const kind = fc.constantFrom<PageKind>('bulk', 'urgent', 'prepaged', 'resent');
const sum = (runs: [number, number][]) => runs.reduce((n, [, count]) => n + count, 0);

const sizesOnlyBatch: fc.Arbitrary<PageBatch> = fc
  .tuple(kind, fc.array(fc.tuple(u32, fc.integer({ min: 0, max: 100_000 })), { maxLength: 8 }))
  .chain(([k, runs]) =>
    fc.integer({ min: 0, max: sum(runs) }).map((zeroCount) => ({
      kind: k,
      runs: runs.flat(),
      pageCount: sum(runs),
      zeroCount,
    })),
  );

const dataBatch: fc.Arbitrary<PageBatch> = fc
  .tuple(kind, fc.array(fc.tuple(u32, fc.integer({ min: 0, max: 20 })), { maxLength: 5 }), fc.integer())
  .chain(([k, runs, seed]) => {
    const pageCount = sum(runs);
    return fc.array(fc.boolean(), { minLength: pageCount, maxLength: pageCount }).map((zero) => {
      const zeroMask = new Uint8Array(Math.ceil(pageCount / 8));
      zero.forEach((z, i) => {
        if (z) zeroMask[i >> 3] |= 1 << (i & 7);
      });
      const zeroCount = zero.filter(Boolean).length;
      const data = fillPages(new Uint8Array((pageCount - zeroCount) * PAGE_SIZE), seed);
      return { kind: k, runs: runs.flat(), pageCount, zeroCount, zeroMask, data };
    });
  });

const variants: Record<string, fc.Arbitrary<Message>> = {
  'pages (sizes only)': sizesOnlyBatch.map((batch): Message => ({ type: 'pages', batch })),
  'pages (with data)': dataBatch.map((batch): Message => ({ type: 'pages', batch })),
  roundEnd: u32.map((round): Message => ({ type: 'roundEnd', round })),
  'switchover (sizes only)': fc
    .record({ postcopy: fc.boolean(), discard: fc.array(u32), deviceStateBytes: u32 })
    .map((r): Message => ({ type: 'switchover', ...r })),
  'switchover (with device state)': fc
    .record({
      postcopy: fc.boolean(),
      discard: fc.array(u32),
      deviceState: fc.uint8Array({ maxLength: 500 }),
    })
    .map((r): Message => ({ type: 'switchover', ...r, deviceStateBytes: r.deviceState.length })),
  complete: u32.map((totalPages): Message => ({ type: 'complete', totalPages })),
  abort: fc.string({ unit: 'binary' }).map((reason): Message => ({ type: 'abort', reason })),
  demand: fc.array(u32).map((pfns): Message => ({ type: 'demand', pfns })),
  resumed: fc.constant<Message>({ type: 'resumed' }),
  done: fc.constant<Message>({ type: 'done' }),
};
const anyMessage = fc.oneof(...Object.values(variants));
const stream = fc.array(anyMessage, { maxLength: 6 });

// ---------------------------------------------------------------------------------------
// Helpers

function encodeAll(messages: Message[]): { bytes: Uint8Array; ends: number[] } {
  const enc = new Encoder();
  const frames = messages.map((m) => enc.encode(m));
  const bytes = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  const ends: number[] = [];
  let at = 0;
  for (const f of frames) {
    bytes.set(f, at);
    at += f.length;
    ends.push(at);
  }
  return { bytes, ends };
}

/** Pushes the chunks in order, collecting every frame and the first error. */
function decodeChunks(chunks: Uint8Array[], opts?: DecoderOptions): DecodeResult & { decoder: Decoder } {
  const decoder = new Decoder(opts);
  const frames: Frame[] = [];
  let error: CodecError | undefined;
  for (const c of chunks) {
    const r = decoder.push(c);
    frames.push(...r.frames);
    error ??= r.error;
  }
  return { frames, error, decoder };
}

function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [0, ...cuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b), bytes.length];
  return points.slice(1).map((end, i) => bytes.subarray(points[i], end));
}

const expected = (messages: Message[]): Frame[] => messages.map((message, seq) => ({ seq, message }));

/** Builds a frame around `body` with a correct length prefix and checksum. */
function frameOf(body: Uint8Array): Uint8Array {
  const f = new Uint8Array(body.length + 8);
  const v = new DataView(f.buffer);
  v.setUint32(0, body.length, true);
  f.set(body, 4);
  v.setUint32(4 + body.length, zlib.crc32(body), true);
  return f;
}

/** Lets `edit` change a valid frame's body, then fixes the checksum so the edit is what is judged. */
function tamper(frame: Uint8Array, edit: (body: DataView, bodyBytes: Uint8Array) => void): Uint8Array {
  const body = frame.slice(4, frame.length - 4);
  edit(new DataView(body.buffer), body);
  return frameOf(body);
}

function header(type: number, seq = 0, flags = 0, version = WIRE_VERSION): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint8(0, version);
  v.setUint8(1, type);
  v.setUint16(2, flags, true);
  v.setUint32(4, seq, true);
  return b;
}

function decodeOne(frame: Uint8Array, opts?: DecoderOptions): DecodeResult {
  return new Decoder(opts).push(frame);
}

const ascii = (s: string) => new TextEncoder().encode(s);

// ---------------------------------------------------------------------------------------
// crc32

test('crc32 matches known vectors', () => {
  assert.equal(crc32(ascii('')), 0);
  assert.equal(crc32(ascii('123456789')), 0xcbf43926);
  assert.equal(crc32(ascii('The quick brown fox jumps over the lazy dog')), 0x414fa339);
  assert.equal(crc32(ascii('xx123456789yy'), 2, 11), 0xcbf43926);
  assert.equal(crc32(ascii('56789'), 0, 5, crc32(ascii('1234'))), 0xcbf43926);
});

test('crc32 matches zlib.crc32 on random data and ranges', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 3000 }), fc.nat(), fc.nat(), (bytes, a, b) => {
      const [start, end] = [a % (bytes.length + 1), b % (bytes.length + 1)].sort((x, y) => x - y);
      assert.equal(crc32(bytes), zlib.crc32(bytes));
      assert.equal(crc32(bytes, start, end), zlib.crc32(bytes.subarray(start, end)));
      assert.equal(crc32(bytes, start, bytes.length, crc32(bytes, 0, start)), zlib.crc32(bytes));
    }),
  );
});

// ---------------------------------------------------------------------------------------
// Round trips

for (const [name, arb] of Object.entries(variants)) {
  test(`round trip: ${name}`, () => {
    fc.assert(
      fc.property(arb, u32, (message, seq) => {
        const frame = encodeMessage(message, seq);
        assert.equal(frame[5], FrameType[message.type]);
        assert.deepStrictEqual(decodeOne(frame, { firstSeq: seq }), { frames: [{ seq, message }] });
      }),
    );
  });
}

test('frame layout: length prefix, header, trailing crc32 of the body', () => {
  const frame = encodeMessage({ type: 'roundEnd', round: 0x01020304 }, 7);
  const v = new DataView(frame.buffer);
  assert.equal(v.getUint32(0, true), 12);
  assert.deepStrictEqual([...frame.subarray(4, 8)], [1, FrameType.roundEnd, 0, 0]);
  assert.equal(v.getUint32(8, true), 7);
  assert.equal(v.getUint32(12, true), 0x01020304);
  assert.equal(v.getUint32(16, true), zlib.crc32(frame.subarray(4, 16)));
});

test('every frame type code is distinct', () => {
  const codes = Object.values(FrameType);
  assert.equal(new Set(codes).size, codes.length);
});

test('abort reasons are UTF-8 like TextEncoder, lone surrogates included', () => {
  const utf16 = fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)) });
  fc.assert(
    fc.property(utf16, (reason) => {
      const frame = encodeMessage({ type: 'abort', reason }, 0);
      const want = new TextEncoder().encode(reason);
      assert.deepStrictEqual(frame.subarray(12, frame.length - 4), want);
      const { frames } = decodeOne(frame);
      // a leading byte-order mark is part of the reason: the decoder must not drop it
      const text = new TextDecoder('utf-8', { ignoreBOM: true }).decode(want);
      assert.deepStrictEqual(frames[0].message, { type: 'abort', reason: text });
    }),
  );
  const frame = encodeMessage({ type: 'abort', reason: '\ufeffhalted' }, 0);
  assert.deepStrictEqual(decodeOne(frame).frames[0].message, { type: 'abort', reason: '\ufeffhalted' });
});

test('abort reason bytes are accepted exactly when they are valid UTF-8', () => {
  // Mostly valid characters with the odd edge case (a lead byte at the edge of its class
  // followed by continuation-like bytes), so that a single overlong form, surrogate, value
  // past U+10FFFF or truncated sequence decides the outcome.
  const valid = fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }).map((c) => [...ascii(c)]);
  const lead = fc.constantFrom(
    0x41,
    0x7f,
    0x80,
    0xbf,
    0xc0,
    0xc1,
    0xc2,
    0xdf,
    0xe0,
    0xe1,
    0xed,
    0xef,
    0xf0,
    0xf4,
    0xf5,
  );
  const cont = fc.oneof(
    fc.constantFrom(0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf),
    fc.integer({ min: 0, max: 255 }),
  );
  const edge = fc.tuple(lead, fc.array(cont, { maxLength: 3 })).map(([l, c]) => [l, ...c]);
  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 12 }).map((b) => [...b]),
    fc
      .array(fc.oneof({ arbitrary: valid, weight: 4 }, { arbitrary: edge, weight: 1 }), { maxLength: 5 })
      .map((t) => t.flat()),
  );
  const examples = [
    [0xe2, 0x82, 0xac], // € (valid)
    [0xf0, 0x9f, 0x98, 0x80], // U+1F600 (valid)
    [0xc0, 0x80], // overlong NUL
    [0xe0, 0x80, 0x80], // overlong, 3 bytes
    [0xf0, 0x80, 0x80, 0x80], // overlong, 4 bytes
    [0xed, 0xa0, 0x80], // surrogate U+D800
    [0xf4, 0x90, 0x80, 0x80], // U+110000
    [0xe2, 0x82], // truncated
  ].map((b): [number[]] => [b]);
  fc.assert(
    fc.property(bytes, (raw) => {
      const reason = Uint8Array.from(raw);
      const result = decodeOne(frameOf(Uint8Array.from([...header(FrameType.abort), ...reason])));
      let want: string | undefined;
      try {
        want = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(reason);
      } catch {}
      if (want === undefined) assert.equal(result.error?.code, 'malformed');
      else assert.deepStrictEqual(result, { frames: [{ seq: 0, message: { type: 'abort', reason: want } }] });
    }),
    { numRuns: 2000, examples },
  );
});

// ---------------------------------------------------------------------------------------
// Streams

test('Encoder numbers frames 0, 1, 2, … and the Decoder accepts them', () => {
  const enc = new Encoder();
  const frames = [
    enc.encode({ type: 'resumed' }),
    enc.encode({ type: 'done' }),
    enc.encode({ type: 'resumed' }),
  ];
  assert.deepStrictEqual(
    frames.map((f) => new DataView(f.buffer).getUint32(8, true)),
    [0, 1, 2],
  );
  assert.equal(enc.nextSeq, 3);
  assert.deepStrictEqual(
    decodeChunks(frames).frames.map((f) => f.seq),
    [0, 1, 2],
  );
});

test('sequence numbers wrap at 2^32 on both sides', () => {
  const enc = new Encoder({ firstSeq: 0xffffffff });
  const r = decodeChunks([enc.encode({ type: 'done' }), enc.encode({ type: 'done' })], {
    firstSeq: 0xffffffff,
  });
  assert.equal(r.error, undefined);
  assert.deepStrictEqual(
    r.frames.map((f) => f.seq),
    [0xffffffff, 0],
  );
});

test('any chunking of a stream yields the same frames', () => {
  fc.assert(
    fc.property(stream, fc.array(fc.nat(), { maxLength: 20 }), (messages, cuts) => {
      const { bytes } = encodeAll(messages);
      const r = decodeChunks(splitAt(bytes, cuts));
      assert.deepStrictEqual(
        { frames: r.frames, error: r.error },
        { frames: expected(messages), error: undefined },
      );
      assert.equal(r.decoder.pendingBytes, 0);
      assert.equal(r.decoder.finish(), undefined);
    }),
  );
});

test('frames spanning chunks are gathered where `allocate` says, exactly sized; others in place', () => {
  fc.assert(
    fc.property(stream, fc.array(fc.nat(), { maxLength: 20 }), (messages, cuts) => {
      const { bytes, ends } = encodeAll(messages);
      // each chunk in a buffer of its own, as a socket's reads usually are
      const chunks = splitAt(bytes, cuts).map((c) => c.slice());
      const given: Uint8Array[] = [];
      const r = decodeChunks(chunks, {
        allocate: (n) => {
          const b = new Uint8Array(n);
          given.push(b);
          return b;
        },
      });
      assert.deepStrictEqual(r.frames, expected(messages));
      // gathered: a frame whose body and checksum (past its 4-byte length) a chunk end cuts
      const chunkEnds: number[] = [];
      let at = 0;
      for (const c of chunks) {
        at += c.length;
        chunkEnds.push(at);
      }
      const sizes = ends
        .map((end, i) => ({ body: (i === 0 ? 0 : ends[i - 1]) + 4, end }))
        .filter(({ body, end }) => chunkEnds.some((e) => e > body && e < end))
        .map(({ body, end }) => end - body);
      assert.deepStrictEqual(
        given.map((b) => b.length),
        sizes,
      );
    }),
  );
});

test('chunks that lie back to back in one buffer are decoded in place, never gathered', () => {
  fc.assert(
    fc.property(stream, fc.array(fc.nat(), { maxLength: 20 }), (messages, cuts) => {
      const { bytes } = encodeAll(messages);
      const r = decodeChunks(splitAt(bytes, cuts), {
        allocate: () => assert.fail('a frame was gathered'),
      });
      assert.deepStrictEqual(r.frames, expected(messages));
      for (const { message } of r.frames)
        if (message.type === 'pages' && message.batch.data)
          assert.equal(message.batch.data.buffer, bytes.buffer, 'the pages are where they were read');
    }),
  );
});

test('byte-at-a-time delivery yields the same frames', () => {
  fc.assert(
    fc.property(
      fc.array(
        anyMessage.filter((m) => m.type !== 'pages'),
        { maxLength: 4 },
      ),
      (messages) => {
        const { bytes } = encodeAll(messages);
        const chunks = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
        assert.deepStrictEqual(decodeChunks(chunks).frames, expected(messages));
      },
    ),
  );
});

test('a truncated stream yields only complete frames, no error, and keeps the rest pending', () => {
  fc.assert(
    fc.property(
      stream.filter((m) => m.length > 0),
      fc.nat(),
      fc.nat(),
      (messages, a, b) => {
        const { bytes, ends } = encodeAll(messages);
        const cut = a % bytes.length; // strictly inside the stream
        const complete = ends.filter((e) => e <= cut).length;
        const start = complete ? ends[complete - 1] : 0;
        // Deliver the prefix in two pieces to exercise partial state too.
        const mid = cut === 0 ? 0 : b % cut;
        const r = decodeChunks([bytes.subarray(0, mid), bytes.subarray(mid, cut)]);
        assert.equal(r.error, undefined);
        assert.deepStrictEqual(r.frames, expected(messages).slice(0, complete));
        assert.equal(r.decoder.pendingBytes, cut - start);
        // The rest completes the stream…
        const more = r.decoder.push(bytes.subarray(cut));
        assert.deepStrictEqual(more, { frames: expected(messages).slice(complete) });
        // …whereas ending at the cut is reported as a truncated frame.
        const truncated = decodeChunks([bytes.subarray(0, cut)]);
        const err = truncated.decoder.finish();
        if (cut === start) assert.equal(err, undefined);
        else assert.equal(err?.code, 'malformed');
      },
    ),
  );
});

test('finish() names the truncation', () => {
  const frame = encodeMessage({ type: 'done' }, 0);
  const d = new Decoder();
  assert.deepStrictEqual(d.push(frame.subarray(0, 10)), { frames: [] });
  const err = d.finish();
  assert.equal(err?.code, 'malformed');
  assert.match(err!.message, /stream ended 10 bytes into a 16-byte frame/);
  assert.deepStrictEqual(d.push(frame.subarray(10)), { frames: [], error: err });
});

// ---------------------------------------------------------------------------------------
// Corruption and bad input

test('any single corrupted byte yields a typed error and never the corrupted frame', () => {
  fc.assert(
    fc.property(
      stream.filter((m) => m.length > 0),
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      fc.array(fc.nat(), { maxLength: 5 }),
      (messages, p, flip, cuts) => {
        const { bytes, ends } = encodeAll(messages);
        const pos = p % bytes.length;
        const corrupted = bytes.slice();
        corrupted[pos] ^= flip;
        const hit = ends.findIndex((e) => e > pos); // index of the damaged frame
        let r: ReturnType<typeof decodeChunks> | undefined;
        assert.doesNotThrow(() => {
          r = decodeChunks(splitAt(corrupted, cuts), { maxFrameBytes: 1 << 20 });
        });
        // A damaged length prefix may leave the decoder waiting for bytes that never come.
        const error = r!.error ?? r!.decoder.finish();
        assert.ok(error, 'corruption went unnoticed');
        assert.ok(['oversized', 'checksum', 'malformed'].includes(error.code), error.code);
        assert.equal(error.seq, hit);
        assert.deepStrictEqual(r!.frames, expected(messages).slice(0, hit));
      },
    ),
  );
});

test('every single-byte corruption of a frame body or checksum is a checksum error', () => {
  const frame = encodeMessage(
    { type: 'switchover', postcopy: true, discard: [1, 2, 3], deviceStateBytes: 9 },
    0,
  );
  for (let pos = 4; pos < frame.length; pos++) {
    for (let flip = 1; flip < 256; flip++) {
      const bad = frame.slice();
      bad[pos] ^= flip;
      const r = decodeOne(bad);
      assert.equal(r.error?.code, 'checksum', `byte ${pos} ^ ${flip}`);
      assert.equal(r.frames.length, 0);
    }
  }
});

test('checksum errors show the received and computed values', () => {
  const frame = encodeMessage({ type: 'complete', totalPages: 5 }, 0);
  frame[frame.length - 1] ^= 0xff;
  const got = new DataView(frame.buffer).getUint32(frame.length - 4, true);
  const want = zlib.crc32(frame.subarray(4, frame.length - 4));
  const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;
  assert.deepStrictEqual(decodeOne(frame).error, {
    code: 'checksum',
    message: `frame 0: checksum mismatch (got ${hex(got)}, expected ${hex(want)})`,
    seq: 0,
  });
});

test('random bytes never make push throw', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), (chunks) => {
      const r = decodeChunks(chunks, { maxFrameBytes: 256 });
      if (r.error) assert.equal(r.frames.length, 0); // 2^-32 chance of a valid first frame
    }),
  );
});

test('random bodies with a valid checksum never make push throw', () => {
  const types = Object.values(FrameType);
  fc.assert(
    fc.property(
      fc.constantFrom(...types),
      fc.integer({ min: 0, max: 3 }),
      fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.uint8Array({ minLength: 4096, maxLength: 4200 })),
      (type, flags, payload) => {
        const r = decodeOne(frameOf(Uint8Array.from([...header(type, 0, flags), ...payload])));
        assert.equal(r.frames.length + (r.error ? 1 : 0), 1);
        if (r.error) assert.match(r.error.message, /^frame 0: /);
      },
    ),
  );
});

test('a declared length above maxFrameBytes is oversized before the body arrives', () => {
  const prefix = new Uint8Array(4);
  new DataView(prefix.buffer).setUint32(0, DEFAULT_MAX_FRAME_BYTES + 1, true);
  const r = new Decoder().push(prefix);
  assert.equal(r.error?.code, 'oversized');
  assert.match(r.error!.message, /declared body length 67108865 exceeds limit 67108864/);

  // A 132-byte body: 8 header + 4 count + 30 pfns.
  const frame = encodeMessage({ type: 'demand', pfns: Array(30).fill(1) }, 0);
  const small = new Decoder({ maxFrameBytes: 131 });
  assert.equal(small.push(frame.subarray(0, 2)).error, undefined);
  assert.equal(small.push(frame.subarray(2, 4)).error?.code, 'oversized');
  assert.equal(new Decoder({ maxFrameBytes: 132 }).push(frame).frames.length, 1);
});

test('a declared length shorter than the header is malformed', () => {
  const frame = frameOf(Uint8Array.of(1, FrameType.done, 0, 0));
  assert.equal(decodeOne(frame).error?.code, 'malformed');
});

test('the encoder refuses frames above maxFrameBytes', () => {
  const msg: Message = { type: 'demand', pfns: Array(30).fill(1) };
  assert.throws(() => encodeMessage(msg, 0, { maxFrameBytes: 131 }), RangeError);
  assert.doesNotThrow(() => encodeMessage(msg, 0, { maxFrameBytes: 132 }));
});

test('wrong version', () => {
  const r = decodeOne(frameOf(header(FrameType.done, 0, 0, 2)));
  assert.deepStrictEqual(r, {
    frames: [],
    error: { code: 'version', message: 'frame 0: wire version 2, this side speaks 1', seq: 0 },
  });
});

test('unknown frame type', () => {
  const r = decodeOne(frameOf(header(0x7f)));
  assert.deepStrictEqual(r, {
    frames: [],
    error: { code: 'unknown-type', message: 'frame 0: unknown frame type 0x7f', seq: 0 },
  });
});

test('out-of-order, repeated or skipped sequence numbers', () => {
  const done: Message = { type: 'done' };
  for (const bad of [0, 2, 7, 0xffffffff]) {
    const r = decodeChunks([encodeMessage(done, 0), encodeMessage(done, bad)]);
    assert.deepStrictEqual(r.frames, [{ seq: 0, message: done }]);
    assert.deepStrictEqual(r.error, {
      code: 'sequence',
      message: `frame 1: sequence number ${bad}, expected 1`,
      seq: 1,
    });
  }
  assert.equal(decodeOne(encodeMessage(done, 1)).error?.code, 'sequence'); // must start at firstSeq
});

test('after an error the decoder is poisoned', () => {
  const enc = new Encoder();
  const good = enc.encode({ type: 'resumed' });
  const bad = enc.encode({ type: 'done' });
  bad[bad.length - 1] ^= 1;
  const d = new Decoder();
  const first = d.push(Uint8Array.from([...good, ...bad]));
  assert.equal(first.frames.length, 1);
  assert.equal(first.error?.code, 'checksum');
  const later = d.push(new Encoder({ firstSeq: 1 }).encode({ type: 'done' }));
  assert.deepStrictEqual(later, { frames: [], error: first.error });
  assert.equal(d.error, first.error);
  assert.equal(d.finish(), first.error);
});

// Malformed payloads: each case edits a valid frame and re-seals it with a correct checksum.
const withData = (): Message => {
  const batch: PageBatch = {
    kind: 'urgent',
    runs: [100, 3, 200, 2],
    pageCount: 5,
    zeroCount: 2,
    zeroMask: Uint8Array.of(0b01010),
    data: fillPages(new Uint8Array(3 * PAGE_SIZE), 42),
  };
  return { type: 'pages', batch };
};
// Body offsets of the pages payload: kind 8, pageCount 9, zeroCount 13, run pairs 17, runs 21.
const malformedCases: [string, Message, (v: DataView, b: Uint8Array) => void, RegExp][] = [
  ['run count sum', withData(), (v) => v.setUint32(9, 6, true), /run counts add to 5 but pageCount is 6/],
  ['zeroCount > pageCount', withData(), (v) => v.setUint32(13, 9, true), /zeroCount 9 exceeds pageCount 5/],
  ['popcount', withData(), (v) => v.setUint32(13, 1, true), /zeroMask marks 2 zero pages but zeroCount is 1/],
  [
    'mask padding',
    withData(),
    (_, b) => {
      b[37] |= 0x80;
    },
    /zeroMask has bits set past pageCount/,
  ],
  ['page kind', withData(), (v) => v.setUint8(8, 9), /pages frame: unknown page kind 9/],
  ['run pairs', withData(), (v) => v.setUint32(17, 1e6, true), /1000000 runs needs 8000000 bytes/],
  ['unknown flag', withData(), (v) => v.setUint16(2, 3, true), /pages frame: unknown flag bits 0x2/],
  [
    'trailing bytes',
    { type: 'roundEnd', round: 1 },
    (v) => v.setUint8(1, FrameType.done),
    /done.*4 trailing/,
  ],
  ['short payload', { type: 'complete', totalPages: 1 }, (v) => v.setUint8(1, FrameType.pages), /needs/],
  [
    'switchover flags',
    {
      type: 'switchover',
      postcopy: false,
      discard: [],
      deviceStateBytes: 2,
      deviceState: Uint8Array.of(1, 2),
    },
    (v) => v.setUint16(2, 0, true),
    /switchover frame: 2 trailing bytes/,
  ],
  [
    'discard count',
    { type: 'switchover', postcopy: false, discard: [1], deviceStateBytes: 0 },
    (v) => v.setUint32(12, 2, true),
    /discard pfns needs 8 bytes, 4 left/,
  ],
];

for (const [name, msg, edit, message] of malformedCases) {
  test(`malformed payload: ${name}`, () => {
    assert.equal(decodeOne(encodeMessage(msg, 0)).error, undefined); // the unedited frame is fine
    const r = decodeOne(tamper(encodeMessage(msg, 0), edit));
    assert.equal(r.error?.code, 'malformed');
    assert.match(r.error!.message, message);
    assert.equal(r.frames.length, 0);
  });
}

test('page data of the wrong length is malformed', () => {
  const frame = encodeMessage(withData(), 0);
  for (const delta of [-1, 1, -PAGE_SIZE, PAGE_SIZE]) {
    const body = frame.subarray(4, frame.length - 4);
    const resized = new Uint8Array(body.length + delta); // data cut short or padded with zeros
    resized.set(body.subarray(0, Math.min(body.length, resized.length)));
    const r = decodeOne(frameOf(resized));
    assert.equal(r.error?.code, 'malformed', `delta ${delta}`);
    assert.match(r.error!.message, /data has \d+ bytes, 3 non-zero pages need 12288/);
  }
});

test('the encoder rejects inconsistent messages and keeps its sequence number', () => {
  const good = withData() as Extract<Message, { type: 'pages' }>;
  const bad: PageBatch[] = [
    { ...good.batch, pageCount: 6 },
    { ...good.batch, zeroCount: 1 },
    { ...good.batch, data: new Uint8Array(10) },
    { ...good.batch, zeroMask: undefined },
    { ...good.batch, runs: [1, 2, 3] },
    { ...good.batch, runs: [-1, 5] },
    { ...good.batch, kind: 'zero' as PageKind },
    { ...good.batch, kind: 'toString' as PageKind },
  ];
  const enc = new Encoder();
  for (const batch of bad) assert.throws(() => enc.encode({ type: 'pages', batch }), RangeError);
  assert.throws(() => enc.encode({ type: 'demand', pfns: [1.5] }), RangeError);
  assert.throws(() => enc.encode({ type: 'roundEnd', round: 2 ** 32 }), RangeError);
  assert.throws(() => encodeMessage({ type: 'done' }, -1), RangeError);
  assert.equal(enc.nextSeq, 0);
});

test('an injected checksum is used on both sides', () => {
  const zero = () => 0;
  const msg: Message = { type: 'roundEnd', round: 3 };
  const frame = encodeMessage(msg, 0, { checksum: zero });
  assert.equal(new DataView(frame.buffer).getUint32(frame.length - 4, true), 0);
  assert.equal(decodeOne(frame).error?.code, 'checksum');
  assert.deepStrictEqual(decodeOne(frame, { checksum: zero }).frames, [{ seq: 0, message: msg }]);
  // node's zlib.crc32 fits the Checksum type and agrees with the built-in one.
  const native = new Encoder({ checksum: zlib.crc32 }).encode(withData());
  assert.deepStrictEqual(native, encodeMessage(withData(), 0));
});
