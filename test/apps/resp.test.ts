// The RESP2 parser and encoders: round trips under arbitrary chunking, pipelining, inline
// commands, malformed input, limits, and the parser's state moving mid-command.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  encodeArray,
  encodeBulk,
  encodeCommand,
  encodeError,
  encodeInteger,
  encodeSimple,
  RespParser,
  type RespParserOptions,
  type RespProtocolError,
  RespReplyParser,
  type RespValue,
} from '../../src/apps/resp.ts';
import { chunked, concat, text } from '../support/bytes.ts';

/** Each char code 0..255 as one byte. */
function bytes(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

interface Outcome {
  commands: string[][];
  error?: RespProtocolError;
}

function parseChunks(parser: RespParser, chunks: Uint8Array[]): Outcome {
  const commands: string[][] = [];
  for (const c of chunks) {
    const r = parser.push(c);
    for (const cmd of r.commands) commands.push(cmd.map(text));
    if (r.error) return { commands, error: r.error };
  }
  return { commands };
}

function parseOnce(input: string, options?: RespParserOptions): Outcome {
  return parseChunks(new RespParser(options), [bytes(input)]);
}

const cuts = fc.array(fc.nat(), { maxLength: 12 });
const arg = fc.uint8Array({ maxLength: 40 });
const command = fc.array(arg, { minLength: 1, maxLength: 6 });
const commands = fc.array(command, { minLength: 1, maxLength: 8 });

test('encodeCommand round-trips through the parser under any chunking', () => {
  fc.assert(
    fc.property(commands, cuts, (cmds, cs) => {
      const stream = concat(cmds.map((c) => encodeCommand(c)));
      const parser = new RespParser();
      const got: Uint8Array[][] = [];
      for (const chunk of chunked(stream, cs)) {
        const r = parser.push(chunk);
        assert.equal(r.error, undefined);
        got.push(...r.commands);
      }
      assert.deepEqual(got, cmds);
      assert.equal(parser.pendingBytes, 0);
    }),
  );
});

test('pipelined commands in one chunk come out together, in order', () => {
  const stream = concat([
    encodeCommand(['SET', 'key:1', 'xxx']),
    encodeCommand(['GET', 'key:1']),
    encodeCommand(['PING']),
  ]);
  const r = new RespParser().push(stream);
  assert.equal(r.error, undefined);
  assert.deepEqual(
    r.commands.map((c) => c.map(text)),
    [['SET', 'key:1', 'xxx'], ['GET', 'key:1'], ['PING']],
  );
});

test('partial input stays buffered until the command is complete', () => {
  const stream = encodeCommand(['SET', 'k', 'v'.repeat(100)]);
  const parser = new RespParser();
  for (let i = 0; i < stream.length - 1; i++) {
    const r = parser.push(stream.subarray(i, i + 1));
    assert.deepEqual(r.commands, [], `complete after ${i + 1} of ${stream.length} bytes`);
    assert.equal(parser.pendingBytes, i + 1);
  }
  const r = parser.push(stream.subarray(stream.length - 1));
  assert.deepEqual(
    r.commands.map((c) => c.map(text)),
    [['SET', 'k', 'v'.repeat(100)]],
  );
  assert.equal(parser.pendingBytes, 0);
});

test('a large bulk string arriving in many chunks', () => {
  const value = new Uint8Array(1 << 20).map((_, i) => (i * 31) & 0xff);
  const stream = encodeCommand([bytes('SET'), bytes('big'), value]);
  const parser = new RespParser();
  const got: Uint8Array[][] = [];
  for (let at = 0; at < stream.length; at += 1000)
    got.push(...parser.push(stream.subarray(at, at + 1000)).commands);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0][2], value);
});

test('inline commands, as redis-cli and redis-benchmark send them', () => {
  const cases: [string, string[][]][] = [
    ['PING\r\n', [['PING']]],
    ['PING\n', [['PING']]],
    ['  set  a   b \r\n', [['set', 'a', 'b']]],
    ['SET k "hello world"\r\n', [['SET', 'k', 'hello world']]],
    ['SET k "a\\x41\\n\\t\\"\\\\"\r\n', [['SET', 'k', 'aA\n\t"\\']]],
    ["SET k 'it\\'s'\r\n", [['SET', 'k', "it's"]]],
    ["SET k 'no \\n escape'\r\n", [['SET', 'k', 'no \\n escape']]],
    ['SET k ""\r\n', [['SET', 'k', '']]],
    ['\r\n\n   \r\nPING\r\n', [['PING']]],
    ['a\vb\r\n', [['a\vb']]],
    ['ECHO a\x00b c\r\n\x00\r\n', [['ECHO', 'a']]],
    ['PING\r\nPING\r\n*1\r\n$4\r\nPING\r\nECHO hi\r\n', [['PING'], ['PING'], ['PING'], ['ECHO', 'hi']]],
  ];
  for (const [input, want] of cases)
    assert.deepEqual(parseOnce(input), { commands: want }, JSON.stringify(input));
  // an inline command split anywhere
  const parser = new RespParser();
  assert.deepEqual(parser.push(bytes('PI')).commands, []);
  assert.deepEqual(parser.push(bytes('NG\r')).commands, []);
  assert.deepEqual(
    parser.push(bytes('\n')).commands.map((c) => c.map(text)),
    [['PING']],
  );
});

test('malformed input gives a typed protocol error, never an exception', () => {
  const cases: [string, RespProtocolError['code'], string][] = [
    ['*1\r\n?3\r\nabc\r\n', 'expected-bulk', "protocol error: expected '$', got '?'"],
    ['*1\r\n\x01', 'expected-bulk', "protocol error: expected '$', got '\\x01'"],
    ['*abc\r\n', 'invalid-multibulk-length', 'protocol error: invalid multibulk length'],
    ['*\r\n', 'invalid-multibulk-length', 'protocol error: invalid multibulk length'],
    ['*01\r\n', 'invalid-multibulk-length', 'protocol error: invalid multibulk length'],
    ['*1 \r\n', 'invalid-multibulk-length', 'protocol error: invalid multibulk length'],
    ['*1\r\n$-1\r\n', 'invalid-bulk-length', 'protocol error: invalid bulk length'],
    ['*1\r\n$x\r\n', 'invalid-bulk-length', 'protocol error: invalid bulk length'],
    ['*1\r\n$+3\r\nabc\r\n', 'invalid-bulk-length', 'protocol error: invalid bulk length'],
    ['*1\r\n$3\r\nabcXY', 'missing-crlf', 'protocol error: expected CRLF after a bulk string of 3 bytes'],
    ['*1\rX', 'missing-crlf', "protocol error: expected '\\n' after '\\r', got 'X'"],
    ['SET k "unterminated\r\n', 'unbalanced-quotes', 'protocol error: unbalanced quotes in request'],
    ['SET k "closed"x\r\n', 'unbalanced-quotes', 'protocol error: unbalanced quotes in request'],
    ["SET k 'open\r\n", 'unbalanced-quotes', 'protocol error: unbalanced quotes in request'],
    ['SET k "a\x00"\r\n', 'unbalanced-quotes', 'protocol error: unbalanced quotes in request'],
  ];
  for (const [input, code, message] of cases) {
    const got = parseOnce(`PING\r\n${input}`);
    assert.deepEqual(got, { commands: [['PING']], error: { code, message } }, JSON.stringify(input));
  }
});

test('after a protocol error the parser refuses further input', () => {
  const parser = new RespParser();
  const first = parser.push(bytes('*1\r\n!'));
  assert.equal(first.error?.code, 'expected-bulk');
  const again = parser.push(encodeCommand(['PING']));
  assert.deepEqual(again, { commands: [], error: first.error });
  assert.deepEqual(parser.error, first.error);
  assert.equal(parser.pendingBytes, 0);
});

test('empty and null multibulks are skipped, as Redis does', () => {
  assert.deepEqual(parseOnce('*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n'), { commands: [['PING']] });
});

test('limits: bulk length, array length, header lines, inline requests', () => {
  const o = { maxBulkLength: 8, maxArrayLength: 3, maxInlineLength: 16 };
  assert.deepEqual(parseOnce('*1\r\n$8\r\n12345678\r\n', o), { commands: [['12345678']] });
  assert.equal(parseOnce('*1\r\n$9\r\n', o).error?.code, 'invalid-bulk-length');
  assert.deepEqual(parseOnce('*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n', o), { commands: [['a', 'b', 'c']] });
  assert.equal(parseOnce('*4\r\n', o).error?.code, 'invalid-multibulk-length');
  // a header line with no end in sight: waits up to the limit, then fails
  assert.deepEqual(parseOnce(`*${'1'.repeat(15)}`, o), { commands: [] });
  assert.deepEqual(parseOnce(`*${'1'.repeat(17)}`, o), {
    commands: [],
    error: { code: 'too-big-count', message: 'protocol error: too big mbulk count string' },
  });
  assert.deepEqual(parseOnce(`*1\r\n$${'1'.repeat(17)}`, o), {
    commands: [],
    error: { code: 'too-big-count', message: 'protocol error: too big bulk count string' },
  });
  // inline: a 16-byte line is fine, 17 bytes without a newline is not
  assert.deepEqual(parseOnce(`${'x'.repeat(16)}\n`, o), { commands: [['x'.repeat(16)]] });
  assert.deepEqual(parseOnce('x'.repeat(16), o), { commands: [] });
  assert.deepEqual(parseOnce('x'.repeat(17), o), {
    commands: [],
    error: { code: 'too-big-inline', message: 'protocol error: too big inline request' },
  });
  // defaults: Redis's 512 MiB bulk limit
  assert.equal(parseOnce(`*1\r\n$${512 * 1024 * 1024 + 1}\r\n`).error?.code, 'invalid-bulk-length');
  assert.deepEqual(parseOnce(`*1\r\n$${512 * 1024 * 1024}\r\n`), { commands: [] });
  assert.throws(() => new RespParser({ maxBulkLength: 0 }), RangeError);
});

/** Byte streams that look like RESP often enough to reach every state, with garbage mixed in. */
const streamPart = fc.oneof(
  command.map((c) => encodeCommand(c)),
  fc
    .array(fc.constantFrom('PING', 'a', '"q q"', "'s'", '"x', '\\x41', '  '), { maxLength: 5 })
    .map((w) => bytes(`${w.join(' ')}\r\n`)),
  fc
    .constantFrom(
      '*',
      '$',
      '\r',
      '\n',
      '\r\n',
      '*2\r\n',
      '$3\r\n',
      '$-1\r\n',
      '*-1\r\n',
      '*0\r\n',
      '*99\r\n',
      '$99\r\n',
    )
    .map(bytes),
  fc.uint8Array({ maxLength: 24 }),
  fc.nat({ max: 40 }).map((n) => bytes(`*1\r\n$${n}\r\n${'v'.repeat(n)}\r\n`)),
  // lines around the length limit
  fc
    .tuple(
      fc.constantFrom('*', '*1\r\n$', 'x', '"'),
      fc.integer({ min: 10, max: 40 }),
      fc.constantFrom('\r\n', '\n', '\rx'),
    )
    .map(([head, n, end]) => bytes(`${head}${'1'.repeat(n)}${end}`)),
);

test('any bytes under any chunking: never throws, and the chunking never changes the outcome', () => {
  const options = { maxBulkLength: 32, maxArrayLength: 4, maxInlineLength: 24 };
  fc.assert(
    fc.property(fc.array(streamPart, { maxLength: 10 }), cuts, (parts, cs) => {
      const stream = concat(parts);
      const whole = parseChunks(new RespParser(options), [stream]);
      const pieces = parseChunks(new RespParser(options), chunked(stream, cs));
      assert.deepEqual(pieces, whole);
    }),
    { numRuns: 500 },
  );
});

test('parser state moves mid-command: export, import elsewhere, continue', () => {
  fc.assert(
    fc.property(commands, fc.nat(), cuts, (cmds, cut, rest) => {
      const stream = concat(cmds.map((c) => encodeCommand(c)));
      const at = cut % (stream.length + 1);
      const source = new RespParser();
      const before = source.push(stream.subarray(0, at));
      assert.equal(before.error, undefined);
      const state = structuredClone(source.state());
      // the state is exactly the bytes of the incomplete command
      const consumed = concat(before.commands.map((c) => encodeCommand(c))).length;
      assert.deepEqual(state, { pending: stream.slice(consumed, at), error: null });
      const destination = RespParser.fromState(state);
      const after = chunked(stream.subarray(at), rest).flatMap((c) => {
        const r = destination.push(c);
        assert.equal(r.error, undefined);
        return r.commands;
      });
      assert.deepEqual([...before.commands, ...after], cmds);
    }),
  );
});

test('parser state carries a protocol error; a malformed state is refused', () => {
  const p = new RespParser();
  p.push(bytes('*1\r\n?'));
  const moved = RespParser.fromState(structuredClone(p.state()));
  assert.equal(moved.push(encodeCommand(['PING'])).error?.code, 'expected-bulk');
  assert.throws(() => RespParser.fromState({ pending: 'x' } as never), /pending must be a Uint8Array/);
  assert.throws(
    () => RespParser.fromState({ pending: new Uint8Array(0), error: 'bad' } as never),
    /error must be null or \{ code, message \}/,
  );
});

test('encoders produce exact RESP bytes', () => {
  const cases: [Uint8Array, string][] = [
    [encodeSimple('OK'), '+OK\r\n'],
    [encodeSimple('two\r\nlines'), '+two  lines\r\n'],
    [encodeError('ERR unknown command'), '-ERR unknown command\r\n'],
    [encodeError(bytes('ERR \xff')), '-ERR \xff\r\n'],
    [encodeInteger(0), ':0\r\n'],
    [encodeInteger(1234567890), ':1234567890\r\n'],
    [encodeInteger(-42), ':-42\r\n'],
    [encodeInteger(9223372036854775807n), ':9223372036854775807\r\n'],
    [encodeBulk(bytes('foobar')), '$6\r\nfoobar\r\n'],
    [encodeBulk(''), '$0\r\n\r\n'],
    [encodeBulk('é'), '$2\r\n\xc3\xa9\r\n'],
    [encodeBulk(null), '$-1\r\n'],
    [encodeArray([]), '*0\r\n'],
    [encodeArray(null), '*-1\r\n'],
    [
      encodeArray([encodeBulk('a'), encodeInteger(1), encodeArray([encodeBulk(null)])]),
      '*3\r\n$1\r\na\r\n:1\r\n*1\r\n$-1\r\n',
    ],
    [encodeCommand(['GET', bytes('k\r\n')]), '*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n'],
  ];
  for (const [got, want] of cases) assert.equal(text(got), want);
  assert.throws(() => encodeInteger(1.5), RangeError);
});

function encodeValue(v: RespValue): Uint8Array {
  switch (v.type) {
    case 'simple':
      return encodeSimple(v.value);
    case 'error':
      return encodeError(v.value);
    case 'integer':
      return encodeInteger(v.value);
    case 'bulk':
      return encodeBulk(v.value);
    case 'array':
      return encodeArray(v.value === null ? null : v.value.map(encodeValue));
  }
}

const line = fc.string({ unit: 'grapheme', maxLength: 20 }).filter((s) => !/[\r\n]/.test(s));
const { value: respValue } = fc.letrec<{ value: RespValue }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    line.map((value) => ({ type: 'simple' as const, value })),
    line.map((value) => ({ type: 'error' as const, value })),
    fc
      .bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n })
      .map((value) => ({ type: 'integer' as const, value })),
    fc.option(fc.uint8Array({ maxLength: 30 })).map((value) => ({ type: 'bulk' as const, value })),
    fc.option(fc.array(tie('value'), { maxLength: 4 })).map((value) => ({ type: 'array' as const, value })),
  ),
}));

test('replies round-trip through the reply parser under any chunking', () => {
  fc.assert(
    fc.property(fc.array(respValue, { maxLength: 6 }), cuts, (values, cs) => {
      const stream = concat(values.map(encodeValue));
      const parser = new RespReplyParser();
      const got: RespValue[] = [];
      for (const chunk of chunked(stream, cs)) {
        const r = parser.push(chunk);
        assert.equal(r.error, undefined);
        got.push(...r.replies);
      }
      assert.deepEqual(got, values);
    }),
  );
  const bad = new RespReplyParser().push(bytes('+OK\r\n?what\r\n'));
  assert.deepEqual(bad.replies, [{ type: 'simple', value: 'OK' }]);
  assert.equal(bad.error?.message, "protocol error: unknown reply type '?'");
  // a leading byte-order mark is part of the text
  const bom = new RespReplyParser().push(encodeSimple('\ufeffOK'));
  assert.deepEqual(bom.replies, [{ type: 'simple', value: '\ufeffOK' }]);
});
