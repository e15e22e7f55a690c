// The HTTP framer (round trips under any chunking, pipelining, limits, each error status,
// random bytes) and the http guest app (routes, objects, counters kept in guest RAM,
// reopened on the same and on copied RAM, interrupted at any access and re-run), and its
// registration among the apps.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  HTTP_OBJECT_MIX,
  HTTP_OPTIONS,
  HttpFormatError,
  HttpServer,
  httpObjectContent,
  httpOptions,
} from '../../src/apps/http.ts';
import {
  HTTP_MAX_BODY_BYTES,
  HTTP_MAX_HEAD_BYTES,
  HTTP_PROTOCOL,
  HttpFramer,
} from '../../src/apps/http-protocol.ts';
import { APP_KINDS, appStats, formatApp, openApp, protocolOf } from '../../src/apps/index.ts';
import type { Framer, FramerResult } from '../../src/apps/protocol.ts';
import { ArrayAccess, type GuestAccess, PageNotPresent } from '../../src/guest/access.ts';
import { chunked, concat, text } from '../support/bytes.ts';
import { TxAccess } from '../support/tx-access.ts';

/** Each char code 0..255 as one byte. */
function bytes(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

const utf8 = new TextEncoder();

interface Got {
  method: string;
  target: string;
  body: string;
  close: boolean;
}

interface Outcome {
  requests: Got[];
  error?: { message: string; reply: string };
}

function collect(framer: Framer, chunks: Uint8Array[]): Outcome {
  const requests: Got[] = [];
  for (const c of chunks) {
    const r = framer.push(c);
    for (const q of r.requests) {
      assert.equal(q.args.length, 3);
      const [method, target, body] = q.args.map(text);
      requests.push({ method, target, body, close: q.close === true });
    }
    if (r.error) return { requests, error: { message: r.error.message, reply: text(r.error.reply) } };
  }
  return { requests };
}

function parseOnce(input: string | Uint8Array): Outcome {
  return collect(HTTP_PROTOCOL.framer(), [typeof input === 'string' ? bytes(input) : input]);
}

interface Response {
  status: number;
  reason: string;
  headers: Map<string, string>;
  body: string;
}

/** Parses one complete response and checks its framing (Content-Length is the body's length). */
function parseResponse(raw: Uint8Array | string, head = false): Response {
  const s = typeof raw === 'string' ? raw : text(raw);
  const end = s.indexOf('\r\n\r\n');
  assert.ok(end > 0, `no end of head in ${JSON.stringify(s.slice(0, 200))}`);
  const [statusLine, ...lines] = s.slice(0, end).split('\r\n');
  const m = /^HTTP\/1\.1 (\d{3}) ([^\r\n]+)$/.exec(statusLine);
  assert.ok(m, `status line ${JSON.stringify(statusLine)}`);
  const headers = new Map<string, string>();
  for (const line of lines) {
    const h = /^([A-Za-z-]+): (.*)$/.exec(line);
    assert.ok(h, `header line ${JSON.stringify(line)}`);
    assert.ok(!headers.has(h[1].toLowerCase()), `header ${h[1]} twice`);
    headers.set(h[1].toLowerCase(), h[2]);
  }
  const body = s.slice(end + 4);
  const length = Number(headers.get('content-length'));
  assert.ok(headers.has('content-type'));
  if (head) assert.equal(body, '', 'a response to HEAD has no body');
  else assert.equal(body.length, length, 'Content-Length is the length of the body');
  return { status: Number(m[1]), reason: m[2], headers, body };
}

// ---------------------------------------------------------------------------------------
// Framer: well-formed requests

interface Spec {
  method: string;
  target: Uint8Array;
  version: '1.0' | '1.1';
  headers: [string, string][];
  connection: string | null;
  body: Uint8Array;
  lengthHeader: 'auto' | 'always' | 'upper';
  eol: '\r\n' | '\n';
  leading: string;
}

function encodeSpec(s: Spec): Uint8Array {
  const lines = [`${s.method} ${text(s.target)} HTTP/${s.version}`];
  for (const [n, v] of s.headers) lines.push(`${n}: ${v}`);
  if (s.connection !== null) lines.push(`Connection: ${s.connection}`);
  if (s.body.length > 0 || s.lengthHeader !== 'auto')
    lines.push(`${s.lengthHeader === 'upper' ? 'CONTENT-LENGTH' : 'content-length'}:  ${s.body.length} `);
  return concat([bytes(s.leading + lines.join(s.eol) + s.eol + s.eol), s.body]);
}

/** What the connection does after the reply, by RFC 9112 §9.3. */
function expectedClose(s: Spec): boolean {
  const tokens = (s.connection ?? '').split(',').map((t) => t.trim().toLowerCase());
  if (tokens.includes('close')) return true;
  return s.version === '1.0' && !tokens.includes('keep-alive');
}

function expected(s: Spec): Got {
  return { method: s.method, target: text(s.target), body: text(s.body), close: expectedClose(s) };
}

const tcharString = fc
  .array(fc.constantFrom(..."abcXYZ019-_.!#$%&'*+^`|~".split('')), { minLength: 1, maxLength: 12 })
  .map((cs) => cs.join(''));
const spec: fc.Arbitrary<Spec> = fc.record({
  method: fc.oneof(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'PATCH', 'OPTIONS'), tcharString),
  target: fc.oneof(
    fc.constantFrom('/', '/obj/1', '/hit/7?x=1', '*', 'http://h:80/obj/2').map(bytes),
    fc
      .array(fc.constantFrom(...'abcXYZ019/._-~%?=&'.split(''), 'é', 'ü', '日本', '😀'), { maxLength: 20 })
      .map((cs) => utf8.encode(`/${cs.join('')}`)),
  ),
  version: fc.constantFrom('1.0', '1.1'),
  headers: fc.array(
    fc.tuple(
      tcharString.filter(
        (n) => !['content-length', 'transfer-encoding', 'connection'].includes(n.toLowerCase()),
      ),
      fc
        .array(fc.integer({ min: 32, max: 255 }).filter((c) => c !== 127))
        .map((cs) => String.fromCharCode(...cs)),
    ),
    { maxLength: 5 },
  ),
  connection: fc.constantFrom(null, 'close', 'keep-alive', 'Keep-Alive', 'CLOSE', 'Upgrade, close', 'foo'),
  body: fc.oneof(
    { weight: 2, arbitrary: fc.constant(new Uint8Array(0)) },
    { weight: 3, arbitrary: fc.uint8Array({ maxLength: 300 }) },
  ),
  lengthHeader: fc.constantFrom('auto', 'always', 'upper'),
  eol: fc.constantFrom('\r\n', '\n'),
  leading: fc.constantFrom('', '', '', '\r\n', '\n', '\r\n\r\n'),
});
const cuts = fc.array(fc.nat(), { maxLength: 12 });

test('framer: requests round-trip under any chunking, pipelined, with nothing left pending', () => {
  fc.assert(
    fc.property(fc.array(spec, { minLength: 1, maxLength: 6 }), cuts, (specs, cs) => {
      const framer = HTTP_PROTOCOL.framer();
      const got = collect(framer, chunked(concat(specs.map(encodeSpec)), cs));
      assert.equal(got.error, undefined);
      assert.deepEqual(got.requests, specs.map(expected));
      assert.equal(framer.pending().length, 0);
    }),
    { numRuns: 300 },
  );
});

test('framer: method, target and body come out as the bytes sent (UTF-8 targets too)', () => {
  const got = parseOnce(
    concat([utf8.encode('PUT /café/ü?q=ß HTTP/1.1\r\nContent-Length: 3\r\n\r\n'), bytes('\x00\xff\n')]),
  );
  assert.deepEqual(got.requests, [
    { method: 'PUT', target: text(utf8.encode('/café/ü?q=ß')), body: '\x00\xff\n', close: false },
  ]);
});

test('framer: pipelined requests in one chunk come out together, in order', () => {
  const wrk = 'GET /obj/3 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n';
  const post = 'POST /hit/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello';
  const r = HTTP_PROTOCOL.framer().push(
    bytes(`${wrk}${post}${wrk}GET / HTTP/1.1\r\nConnection: close\r\n\r\n`),
  );
  assert.equal(r.error, undefined);
  assert.deepEqual(
    r.requests.map((q) => [...q.args.map(text), q.close]),
    [
      ['GET', '/obj/3', '', false],
      ['POST', '/hit/1', 'hello', false],
      ['GET', '/obj/3', '', false],
      ['GET', '/', '', true],
    ],
  );
});

const PIPELINE = [
  'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
  'POST /hit/2 HTTP/1.1\r\nContent-Length: 11\r\nX-A: b\r\n\r\nhello world',
  '\r\nGET /obj/0 HTTP/1.0\nconnection: keep-alive\n\n',
  'HEAD /stats HTTP/1.0\r\n\r\n',
];

test('framer: a pipeline cut at every byte gives the same requests; pending() is the unparsed tail', () => {
  const stream = bytes(PIPELINE.join(''));
  const whole = parseOnce(stream);
  assert.equal(whole.requests.length, PIPELINE.length);
  // request i is complete once `ends[i]` bytes have arrived; parsing starts after empty lines
  const ends = PIPELINE.map((_, i) => PIPELINE.slice(0, i + 1).join('').length);
  for (let cut = 0; cut <= stream.length; cut++) {
    const framer = new HttpFramer();
    const first = collect(framer, [stream.subarray(0, cut)]);
    assert.equal(first.requests.length, ends.filter((e) => e <= cut).length, `cut at ${cut}`);
    const from = Math.max(0, ...ends.filter((e) => e <= cut));
    // empty lines before a request line are skipped, not kept
    const tail = text(stream.subarray(from, cut)).replace(/^(\r\n|\n)+/, '');
    assert.equal(text(framer.pending()), tail, `pending after a cut at ${cut}`);
    // the pending bytes alone, in a new framer, carry the connection on
    const moved = new HttpFramer();
    const second = collect(moved, [framer.pending(), stream.subarray(cut)]);
    assert.deepEqual([...first.requests, ...second.requests], whole.requests, `cut at ${cut}`);
    assert.equal(second.error, undefined);
    const rest = collect(framer, [stream.subarray(cut)]);
    assert.deepEqual([...first.requests, ...rest.requests], whole.requests, `cut at ${cut}`);
  }
});

test('framer: an error is reached the same way wherever the stream is cut', () => {
  const stream = bytes(`${PIPELINE[1]}GET /x HTTP/1.1\r\nbad header\r\n\r\nGET / HTTP/1.1\r\n\r\n`);
  const whole = parseOnce(stream);
  assert.equal(whole.requests.length, 1);
  assert.equal(whole.error?.message, 'bad header line');
  fc.assert(
    fc.property(cuts, (cs) => {
      assert.deepEqual(collect(new HttpFramer(), chunked(stream, cs)), whole);
    }),
  );
  for (let cut = 0; cut <= stream.length; cut++)
    assert.deepEqual(collect(new HttpFramer(), [stream.subarray(0, cut), stream.subarray(cut)]), whole);
});

test('framer: a request arriving byte by byte is held until complete', () => {
  const stream = bytes('POST /hit/0 HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody');
  const framer = HTTP_PROTOCOL.framer();
  for (let i = 0; i < stream.length - 1; i++) {
    const r = framer.push(stream.subarray(i, i + 1));
    assert.deepEqual(r, { requests: [] }, `complete after ${i + 1} of ${stream.length} bytes`);
    assert.deepEqual(framer.pending(), stream.subarray(0, i + 1));
  }
  const r = framer.push(stream.subarray(stream.length - 1));
  assert.deepEqual(r.requests[0].args.map(text), ['POST', '/hit/0', 'body']);
  assert.deepEqual(framer.pending(), new Uint8Array(0));
});

test('framer: pending() is a copy', () => {
  const framer = HTTP_PROTOCOL.framer();
  framer.push(bytes('GET /obj/1 HTTP/1.1\r\nHo'));
  const p = framer.pending();
  p.fill(0x41);
  assert.equal(text(framer.pending()), 'GET /obj/1 HTTP/1.1\r\nHo');
  const r = framer.push(bytes('st: x\r\n\r\n'));
  assert.deepEqual(r.requests[0].args.map(text), ['GET', '/obj/1', '']);
});

test('framer: Connection and HTTP version decide close; header names in any case', () => {
  const cases: [string, boolean][] = [
    ['GET / HTTP/1.1\r\n\r\n', false],
    ['GET / HTTP/1.1\r\nConnection: close\r\n\r\n', true],
    ['GET / HTTP/1.1\r\nCONNECTION: Close\r\n\r\n', true],
    ['GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n', true],
    ['GET / HTTP/1.1\r\nConnection: Upgrade\r\nconnection: close\r\n\r\n', true],
    ['GET / HTTP/1.1\r\nConnection: closed\r\n\r\n', false],
    ['GET / HTTP/1.1\r\nX-Connection: close\r\n\r\n', false],
    ['GET / HTTP/1.0\r\n\r\n', true],
    ['GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n', false],
    ['GET / HTTP/1.0\r\nconnection:keep-alive\r\n\r\n', false],
    ['GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n', true],
    ['GET / HTTP/1.9\r\n\r\n', false],
  ];
  for (const [req, close] of cases) {
    const got = parseOnce(req);
    assert.equal(got.error, undefined, req);
    assert.equal(got.requests[0].close, close, JSON.stringify(req));
  }
  const got = parseOnce('POST / HTTP/1.1\r\ncOnTeNt-LeNgTh: 2\r\n\r\nokGET / HTTP/1.1\r\n\r\n');
  assert.deepEqual(
    got.requests.map((r) => r.body),
    ['ok', ''],
  );
});

test('framer: Content-Length values that agree count once', () => {
  for (const h of ['Content-Length: 3, 3', 'Content-Length: 003', 'Content-Length: 3\r\nContent-Length: 3']) {
    const got = parseOnce(`POST / HTTP/1.1\r\n${h}\r\n\r\nabcGET / HTTP/1.1\r\n\r\n`);
    assert.equal(got.error, undefined, h);
    assert.deepEqual(
      got.requests.map((r) => r.body),
      ['abc', ''],
      h,
    );
  }
});

test('what curl, wrk and ab send', () => {
  const curl = 'GET /obj/5 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n';
  const curlPost =
    'POST /hit/3 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n' +
    'Content-Length: 5\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\na=b&c';
  const curlHead = 'HEAD / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n';
  const wrk = 'GET /obj/0 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n';
  const ab =
    'GET /stats HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n';
  const abk =
    'GET /stats HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n';
  assert.deepEqual(parseOnce(curl + curlPost + curlHead + wrk + wrk + ab + abk), {
    requests: [
      { method: 'GET', target: '/obj/5', body: '', close: false },
      { method: 'POST', target: '/hit/3', body: 'a=b&c', close: false },
      { method: 'HEAD', target: '/', body: '', close: false },
      { method: 'GET', target: '/obj/0', body: '', close: false },
      { method: 'GET', target: '/obj/0', body: '', close: false },
      { method: 'GET', target: '/stats', body: '', close: true },
      { method: 'GET', target: '/stats', body: '', close: false },
    ],
  });
});

// ---------------------------------------------------------------------------------------
// Framer: limits and errors

function assertError(input: string | Uint8Array, status: number, message?: string | RegExp): void {
  const framer = HTTP_PROTOCOL.framer();
  const data = typeof input === 'string' ? bytes(input) : input;
  const r = framer.push(data);
  const what = JSON.stringify(text(data.subarray(0, 80)));
  assert.ok(r.error, `no error for ${what}`);
  const res = parseResponse(r.error.reply);
  assert.equal(res.status, status, `${what}: ${r.error.message}`);
  assert.equal(res.headers.get('connection'), 'close');
  assert.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8');
  assert.equal(res.body, `${r.error.message}\n`);
  if (typeof message === 'string') assert.equal(r.error.message, message);
  else if (message) assert.match(r.error.message, message);
  // the framer takes no more input: the same error, no requests
  const again = framer.push(bytes('GET / HTTP/1.1\r\n\r\n'));
  assert.deepEqual(again, { requests: [], error: r.error });
  assert.deepEqual(framer.push(new Uint8Array(0)), { requests: [], error: r.error });
}

test('framer: a bad request line is 400', () => {
  for (const line of [
    'GET /',
    'GET',
    ' GET / HTTP/1.1',
    'GET  / HTTP/1.1',
    'G(T / HTTP/1.1',
    'GET /a\x00b HTTP/1.1',
    'GET /a\x7fb HTTP/1.1',
    'GET /a\tb HTTP/1.1',
    'GET /a\rb HTTP/1.1',
    '\r GET / HTTP/1.1',
    'GÉT / HTTP/1.1',
  ])
    assertError(`${line}\r\n\r\n`, 400, 'bad request line');
});

test('framer: a bad version is 400, another major version 505', () => {
  for (const v of [
    'HTTP/1',
    'HTTP/1.10',
    'http/1.1',
    'HTTP/x.1',
    'HTTP/1.1 ',
    'HTTP/1,1',
    'HTTPS/1.1',
    'HTTP/11',
  ])
    assertError(`GET / ${v}\r\n\r\n`, 400, 'bad HTTP version');
  for (const line of ['GET / ', 'GET /  HTTP/1.1', 'GET / HTTP/1.1\rX'])
    assertError(`${line}\r\n\r\n`, 400, 'bad HTTP version');
  assertError('GET / HTTP/2.0\r\n\r\n', 505, 'HTTP/2.0 is not supported');
  assertError('GET / HTTP/0.9\r\n\r\n', 505);
});

test('framer: a bad header line is 400', () => {
  for (const h of [
    'NoColon',
    'Bad Name: x',
    'Name : x',
    ': no name',
    ' folded: x',
    '\tfolded',
    'X-A: a\x01b',
    'X-A: a\rb',
    'X-A: a\x00',
    'X-A: \x7f',
    'Nämé: x',
  ])
    assertError(`GET / HTTP/1.1\r\nHost: a\r\n${h}\r\n\r\n`, 400, 'bad header line');
  // after a good header, a continuation line (obsolete folding) is refused too
  assertError('GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n', 400, 'bad header line');
});

test('framer: a bad Content-Length is 400', () => {
  for (const h of [
    'Content-Length: abc',
    'Content-Length: -1',
    'Content-Length: +1',
    'Content-Length: 1 2',
    'Content-Length: 1, 2',
    'Content-Length: 1,',
    'Content-Length:',
    'Content-Length: 0x10',
    'Content-Length: 5\r\nContent-Length: 6',
  ])
    assertError(`POST / HTTP/1.1\r\n${h}\r\n\r\n`, 400, 'bad Content-Length');
});

test('framer: Transfer-Encoding is 501', () => {
  assertError('POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 501);
  assertError('POST / HTTP/1.1\r\ntransfer-encoding: identity\r\nContent-Length: 0\r\n\r\n', 501);
});

test('framer: a body of 1 MiB is served, one byte more is 413 without waiting for it', () => {
  assert.equal(HTTP_MAX_BODY_BYTES, 1 << 20);
  const body = new Uint8Array(HTTP_MAX_BODY_BYTES).map((_, i) => i * 7);
  const ok = HTTP_PROTOCOL.framer().push(
    concat([bytes(`POST /hit/0 HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n`), body]),
  );
  assert.equal(ok.error, undefined);
  assert.deepEqual(ok.requests[0].args[2], body);
  assertError(
    `POST / HTTP/1.1\r\nContent-Length: ${HTTP_MAX_BODY_BYTES + 1}\r\n\r\n`,
    413,
    `request body over ${HTTP_MAX_BODY_BYTES} bytes`,
  );
  assertError('POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n', 413);
});

/** A request whose line and headers take exactly `n` bytes. */
function headOf(n: number): string {
  const start = 'GET / HTTP/1.1\r\nX-Pad: ';
  return `${start}${'p'.repeat(n - start.length - 4)}\r\n\r\n`;
}

test('framer: a request line and headers of 16 KiB are served, one byte more is 431', () => {
  assert.equal(HTTP_MAX_HEAD_BYTES, 16384);
  assert.equal(headOf(16384).length, 16384);
  const ok = parseOnce(headOf(16384));
  assert.equal(ok.error, undefined);
  assert.equal(ok.requests.length, 1);
  assertError(headOf(16385), 431, 'request line and headers over 16384 bytes');
  // the limit counts from the request line, not from the empty lines before it
  assert.equal(parseOnce(`\r\n\r\n${headOf(16384)}`).requests.length, 1);
  // a head that cannot end within the limit is refused as soon as that is certain
  const framer = HTTP_PROTOCOL.framer();
  assert.deepEqual(framer.push(bytes(headOf(16384).slice(0, -1))), { requests: [] });
  const long = HTTP_PROTOCOL.framer();
  assert.deepEqual(long.push(bytes('GET / HTTP/1.1\r\n')), { requests: [] });
  assert.deepEqual(long.push(bytes('x'.repeat(16384 - 16 - 1))), { requests: [] });
  assert.equal(long.push(bytes('x')).error?.message, 'request line and headers over 16384 bytes');
  assertError('a'.repeat(16384), 431);
});

test('framer: requests before an error in the same chunk are still returned', () => {
  const got = parseOnce(
    'GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/9.9\r\n\r\nGET /d HTTP/1.1\r\n\r\n',
  );
  assert.deepEqual(
    got.requests.map((r) => r.target),
    ['/a', '/b'],
  );
  assert.equal(got.error?.message, 'HTTP/9.9 is not supported');
});

const fragment = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc.constantFrom(
    ...[
      'GET / HTTP/1.1\r\n',
      'POST /hit/1 HTTP/1.0\r\n',
      'Content-Length: 3\r\n',
      'Content-Length: 999999999\r\n',
      'Transfer-Encoding: chunked\r\n',
      'Connection: close\r\n',
      '\r\n',
      '\n',
      '\r',
      ':',
      ' ',
      'HTTP/1.1',
      'abc',
    ].map(bytes),
  ),
);

test('framer: never throws on any input; once it fails it fails the same way', () => {
  fc.assert(
    fc.property(fc.array(fc.array(fragment, { maxLength: 8 }), { maxLength: 8 }), (pushes) => {
      const framer = HTTP_PROTOCOL.framer();
      let failedWith: FramerResult['error'];
      for (const parts of pushes) {
        const r = framer.push(concat(parts));
        if (failedWith) assert.deepEqual(r, { requests: [], error: failedWith });
        else if (r.error) {
          failedWith = r.error;
          assert.match(text(r.error.reply), /^HTTP\/1\.1 (400|413|431|501|505) [^\r\n]+\r\n/);
          parseResponse(r.error.reply);
        }
        for (const q of r.requests) assert.equal(q.args.length, 3);
        framer.pending();
      }
    }),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 20000 }), cuts, (data, cs) => {
      const framer = HTTP_PROTOCOL.framer();
      for (const chunk of chunked(data, cs)) framer.push(chunk);
      assert.ok(framer.pending().length <= data.length);
    }),
    { numRuns: 100 },
  );
});

// ---------------------------------------------------------------------------------------
// The app

function get(server: HttpServer, target: string, method = 'GET', body = ''): Response {
  return parseResponse(server.execute([bytes(method), bytes(target), bytes(body)]), method === 'HEAD');
}

function fresh(options: Partial<typeof HTTP_OPTIONS> = {}, size = 4 << 20): [HttpServer, ArrayAccess] {
  const mem = new ArrayAccess(new Uint8Array(size));
  return [HttpServer.format(mem, { ...HTTP_OPTIONS, ...options }), mem];
}

test('app: format lays out 256 objects and 1024 counters by default', () => {
  assert.deepEqual(HTTP_OPTIONS, { objects: 256, counters: 1024 });
  const [server] = fresh();
  assert.deepEqual(server.stats(), { requests: 0, hits: 0, objects: 256 });
  assert.equal(server.counters, 1024);
  const index = get(server, '/');
  assert.equal(index.status, 200);
  assert.equal(index.headers.get('content-type'), 'text/plain; charset=utf-8');
  assert.equal(index.headers.get('connection'), 'keep-alive');
  assert.match(index.body, /^objects: 256 \(3014656 bytes\) at \/obj\/0 \.\. \/obj\/255$/m);
  for (const line of ['128 of 1024 bytes', '64 of 4096 bytes', '32 of 16384 bytes', '32 of 65536 bytes'])
    assert.ok(index.body.includes(line), `${line} in ${index.body}`);
  assert.match(index.body, /counters: 1024 at \/hit\/0 \.\. \/hit\/1023/);
});

test('app: format over RAM holding other bytes starts from zero counters and the same objects', () => {
  const dirty = new ArrayAccess(new Uint8Array(2 << 20).fill(0xa5));
  const server = HttpServer.format(dirty, { objects: 16, counters: 100 });
  assert.deepEqual(server.stats(), { requests: 0, hits: 0, objects: 16 });
  for (const k of [0, 50, 99]) assert.equal(get(server, `/hit/${k}`).body, '1\n');
  for (const i of [0, 7, 15]) assert.equal(get(server, `/obj/${i}`).body, text(httpObjectContent(i)));
});

test('app: object sizes follow the mix, contents are deterministic and distinct per object', () => {
  assert.deepEqual(HTTP_OBJECT_MIX, [1024, 1024, 1024, 1024, 4096, 4096, 16384, 65536]);
  const [a] = fresh({ objects: 40 });
  const [b] = fresh({ objects: 40 }, 8 << 20);
  const seen = new Set<string>();
  for (let i = 0; i < 40; i++) {
    const r = get(a, `/obj/${i}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'application/octet-stream');
    assert.equal(r.body.length, HTTP_OBJECT_MIX[i % 8], `size of object ${i}`);
    assert.equal(r.body, text(httpObjectContent(i)), `content of object ${i}`);
    assert.equal(get(b, `/obj/${i}`).body, r.body, 'the same object on another RAM');
    seen.add(r.body.slice(0, 64));
    // no four zero bytes in a row: a page lost and read as zeros shows
    assert.ok(!r.body.includes('\0\0\0\0'), `object ${i} has a zero word`);
  }
  assert.equal(seen.size, 40, 'objects differ');
});

test('app: objects are served from guest RAM (a changed byte shows)', () => {
  const [server, mem] = fresh({ objects: 8 });
  const offset = mem.readU32(4096 + 8 * 5);
  assert.equal(mem.readU32(4096 + 8 * 5 + 4), 4096);
  const before = get(server, '/obj/5').body;
  mem.bytes[offset + 100] ^= 0xff;
  const after = get(server, '/obj/5').body;
  assert.notEqual(after, before);
  assert.equal(after.charCodeAt(100), before.charCodeAt(100) ^ 0xff);
});

test('app: /hit/<k> counts in guest RAM, by GET and POST', () => {
  const [server, mem] = fresh({ objects: 8, counters: 16 });
  assert.equal(get(server, '/hit/3').body, '1\n');
  assert.equal(get(server, '/hit/3', 'POST', 'ignored').body, '2\n');
  assert.equal(get(server, '/hit/15?x=y').body, '1\n');
  assert.equal(get(server, '/hit/0').body, '1\n');
  const r = get(server, '/hit/3');
  assert.deepEqual(
    [r.status, r.body, r.headers.get('content-type')],
    [200, '3\n', 'text/plain; charset=utf-8'],
  );
  assert.deepEqual(
    [0, 1, 3, 15].map((k) => server.counter(k)),
    [1, 0, 3, 1],
  );
  assert.deepEqual(server.stats(), { requests: 5, hits: 5, objects: 8 });
  // counters wrap as u32
  const counterTable = mem.readU32(28);
  mem.writeU32(counterTable + 4 * 7, 0xffff_ffff);
  assert.equal(get(server, '/hit/7').body, '0\n');
});

test('app: /stats is JSON counting this request', () => {
  const [server] = fresh({ objects: 8 });
  get(server, '/hit/1');
  get(server, '/nope');
  get(server, '/obj/1');
  const r = get(server, '/stats');
  assert.equal(r.headers.get('content-type'), 'application/json');
  assert.deepEqual(JSON.parse(r.body), { requests: 4, hits: 1, objects: 8 });
  assert.deepEqual(server.stats(), { requests: 4, hits: 1, objects: 8 });
});

test('app: unknown paths and bad indexes are 404, other methods 405 with Allow', () => {
  const [server] = fresh({ objects: 8, counters: 16 });
  for (const target of [
    '/nope',
    '/obj/8',
    '/obj/-1',
    '/obj/01',
    '/obj/',
    '/obj/1/',
    '/obj/1x',
    '/obj/99999999999',
    '/obj',
    '/hit/16',
    '/hit/x',
    '/hit/',
    '/stats/',
    '//',
    '*',
    '',
  ]) {
    const r = get(server, target);
    assert.equal(r.status, 404, target);
    assert.equal(r.reason, 'Not Found');
  }
  assert.equal(get(server, '/obj/9', 'POST').status, 404);
  const cases: [string, string, string][] = [
    ['POST', '/', 'GET, HEAD'],
    ['DELETE', '/obj/0', 'GET, HEAD'],
    ['POST', '/obj/0', 'GET, HEAD'],
    ['get', '/obj/0', 'GET, HEAD'],
    ['PUT', '/stats', 'GET, HEAD'],
    ['PUT', '/hit/1', 'GET, POST'],
    ['HEAD', '/hit/1', 'GET, POST'],
  ];
  for (const [method, target, allow] of cases) {
    const r = get(server, target, method);
    assert.equal(r.status, 405, `${method} ${target}`);
    assert.equal(r.reason, 'Method Not Allowed');
    assert.equal(r.headers.get('allow'), allow);
    assert.equal(r.headers.get('connection'), 'keep-alive');
  }
  assert.equal(server.counter(1), 0, 'a refused hit writes no counter');
  assert.deepEqual(server.stats(), { requests: 24, hits: 0, objects: 8 });
  // not the three arguments the framer gives
  assert.equal(parseResponse(server.execute([bytes('GET')])).status, 400);
  assert.equal(server.stats().requests, 25);
});

test('app: HEAD has the headers of GET and no body', () => {
  const [server] = fresh({ objects: 8 });
  for (const target of ['/', '/obj/7', '/obj/0', '/stats', '/nope']) {
    const head = get(server, target, 'HEAD');
    const full = get(server, target);
    assert.equal(head.status, full.status);
    if (target !== '/stats') assert.deepEqual(head.headers, full.headers, target);
  }
  assert.equal(get(server, '/obj/7', 'HEAD').headers.get('content-length'), '65536');
});

test('app: the query is ignored, an absolute-form target counts by its path', () => {
  const [server] = fresh({ objects: 8 });
  const want = text(httpObjectContent(2));
  assert.equal(get(server, '/obj/2?cache=no#frag').body, want);
  assert.equal(get(server, 'http://example.com:8080/obj/2').body, want);
  assert.equal(get(server, 'HTTP://example.com/obj/2?x').body, want);
  assert.equal(get(server, 'http://example.com').status, 200);
});

test('app: counters persist in RAM: a second open on the same RAM, and on a copy, sees them', () => {
  const [server, mem] = fresh({ objects: 8, counters: 32 });
  for (const k of [1, 1, 2, 31]) get(server, `/hit/${k}`);
  const again = HttpServer.open(mem);
  assert.deepEqual(again.stats(), { requests: 4, hits: 4, objects: 8 });
  assert.equal(get(again, '/hit/1').body, '3\n');
  assert.equal(get(server, '/hit/1').body, '4\n', 'the first server sees the second one’s write');
  const copy = new ArrayAccess(mem.bytes.slice());
  const moved = HttpServer.open(copy);
  assert.equal(moved.counters, 32);
  assert.equal(get(moved, '/hit/31').body, '2\n');
  assert.equal(get(moved, '/hit/2').body, '2\n');
  assert.deepEqual(JSON.parse(get(moved, '/stats').body), { requests: 9, hits: 8, objects: 8 });
  assert.deepEqual(server.stats(), { requests: 6, hits: 6, objects: 8 }, 'the copy is a copy');
});

test('app: servers on the same RAM take turns and agree with a model', () => {
  const request = fc.oneof(
    fc.nat({ max: 9 }).map((k) => ['GET', `/hit/${k}`]),
    fc.nat({ max: 9 }).map((k) => ['POST', `/hit/${k}`]),
    fc.nat({ max: 9 }).map((i) => ['GET', `/obj/${i}`]),
    fc.constant(['GET', '/stats']),
    fc.constant(['HEAD', '/hit/1']),
    fc.constant(['GET', '/nope']),
  );
  fc.assert(
    fc.property(fc.array(fc.tuple(request, fc.boolean()), { maxLength: 40 }), (reqs) => {
      const mem = new ArrayAccess(new Uint8Array(256 * 1024));
      const servers = [HttpServer.format(mem, { objects: 8, counters: 8 }), HttpServer.open(mem)];
      const counters = new Array(8).fill(0);
      let requests = 0;
      let hits = 0;
      for (const [[method, target], pick] of reqs) {
        const r = get(servers[pick ? 1 : 0], target, method);
        requests++;
        const k = Number(target.slice(5));
        if (target.startsWith('/hit/') && method !== 'HEAD' && k < 8) {
          hits++;
          assert.equal(r.body, `${++counters[k]}\n`);
        } else if (target.startsWith('/hit/')) assert.equal(r.status, k < 8 ? 405 : 404);
        else if (target.startsWith('/obj/')) assert.equal(r.status, Number(target.slice(5)) < 8 ? 200 : 404);
        else if (target === '/stats') assert.deepEqual(JSON.parse(r.body), { requests, hits, objects: 8 });
        else assert.equal(r.status, 404);
      }
      assert.deepEqual(servers[0].stats(), { requests, hits, objects: 8 });
      for (let k = 0; k < 8; k++) assert.equal(servers[1].counter(k), counters[k]);
    }),
    { numRuns: 100 },
  );
});

test('app: a small region holds fewer objects; one too small for one object is an error', () => {
  const [server, mem] = fresh({}, 1 << 20);
  const n = server.stats().objects;
  assert.ok(n > 0 && n < 256, `${n} objects in 1 MiB`);
  assert.equal(get(server, `/obj/${n}`).status, 404);
  assert.equal(get(server, `/obj/${n - 1}`).body, text(httpObjectContent(n - 1)));
  assert.equal(get(server, '/hit/1023').body, '1\n');
  assert.ok(mem.readU32(8) <= 1 << 20);
  // one more object would not have fitted
  assert.ok(mem.readU32(8) + HTTP_OBJECT_MIX[n % 8] > 1 << 20 || n === 256);
  assert.throws(
    () => HttpServer.format(new ArrayAccess(new Uint8Array(8192)), HTTP_OPTIONS),
    (e: Error) => e instanceof HttpFormatError && /counters=1024/.test(e.message),
  );
  // header page, table page, a page of four 1 KiB objects, one counter; the fifth object is 4 KiB
  const tiny = new ArrayAccess(new Uint8Array(3 * 4096 + 4));
  assert.equal(HttpServer.format(tiny, { objects: 5, counters: 1 }).stats().objects, 4);
  assert.throws(
    () => HttpServer.format(new ArrayAccess(new Uint8Array(3 * 4096 + 3)), { objects: 5, counters: 1 }),
    /too small for one object and counters=1 \(needs 12292 bytes\)/,
  );
});

test('app: options are merged over the defaults and checked by name', () => {
  assert.deepEqual(httpOptions({}), HTTP_OPTIONS);
  assert.deepEqual(httpOptions({ counters: 7 }), { objects: 256, counters: 7 });
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ objects: 0 }, /option 'objects' must be a whole number from 1 to 65536, got 0/],
    [{ objects: 65537 }, /'objects'/],
    [{ objects: '3' }, /'objects'/],
    [{ counters: 1.5 }, /option 'counters'.*got 1\.5/],
    [{ counters: -1 }, /'counters'/],
    [{ bogus: 1 }, /unknown option 'bogus' \(known: objects, counters\)/],
  ];
  for (const [options, want] of bad) {
    assert.throws(() => httpOptions(options), want);
    assert.throws(() => formatApp('http', options, new ArrayAccess(new Uint8Array(1 << 20))), want);
  }
  assert.throws(
    () => HttpServer.format(new ArrayAccess(new Uint8Array(1 << 20)), { objects: 0, counters: 1 }),
    /'objects'/,
  );
});

test('app: open() on anything but an http region is a clear error', () => {
  assert.throws(() => HttpServer.open(new ArrayAccess(new Uint8Array(8192))), {
    message: "not an http region: magic is 0x00000000, expected 0x31544846 ('FHT1')",
  });
  assert.throws(() => HttpServer.open(new ArrayAccess(new Uint8Array(100))), /only 100 bytes/);
  const broken: [number, number, RegExp][] = [
    [4, 2, /version 2; this build reads version 1/],
    [12, 0, /object count 0/],
    [16, 1 << 21, /counter count/],
    [12, 9, /object bytes offset|counter table offset|used bytes/],
    [8, 12345, /used bytes 12345/],
    [28, 0, /counter table offset 0/],
  ];
  for (const [at, v, want] of broken) {
    const [, mem] = fresh({ objects: 8, counters: 4 }, 1 << 20);
    HttpServer.open(mem);
    mem.writeU32(at, v);
    assert.throws(
      () => HttpServer.open(mem),
      (e: Error) => e instanceof HttpFormatError && want.test(e.message),
      `${at} = ${v}`,
    );
  }
  // a region cut short of what its header says it uses
  const [, mem] = fresh({ objects: 8, counters: 4 }, 1 << 20);
  assert.throws(
    () => HttpServer.open(new ArrayAccess(mem.bytes.subarray(0, 64 * 1024))),
    /do not fit in guest RAM/,
  );
});

// ---------------------------------------------------------------------------------------
// Restart: interrupted at any access, rolled back, re-run

/** Counts accesses, and refuses any outside [0, limit). */
class CountingAccess implements GuestAccess {
  accesses = 0;
  constructor(
    readonly inner: ArrayAccess,
    readonly limit = inner.size,
  ) {}
  get size(): number {
    return this.inner.size;
  }
  private touch(addr: number, len: number): void {
    this.accesses++;
    if (addr + len > this.limit) throw new Error(`access ${addr}+${len} beyond ${this.limit}`);
  }
  read(addr: number, len: number): Uint8Array {
    this.touch(addr, len);
    return this.inner.read(addr, len);
  }
  write(addr: number, bytes: Uint8Array): void {
    this.touch(addr, bytes.length);
    this.inner.write(addr, bytes);
  }
  readU32(addr: number): number {
    this.touch(addr, 4);
    return this.inner.readU32(addr);
  }
  writeU32(addr: number, value: number): void {
    this.touch(addr, 4);
    this.inner.writeU32(addr, value);
  }
}

test('restart: a request interrupted at any access and re-run ends as if never interrupted', () => {
  const size = 512 * 1024;
  const refMem = new ArrayAccess(new Uint8Array(size));
  const ref = HttpServer.format(refMem, { objects: 8, counters: 8 });
  const tx = new TxAccess(refMem.bytes.slice());
  const server = HttpServer.open(tx);
  let interruptions = 0;
  const requests: [string, string][] = [
    ['GET', '/hit/3'],
    ['POST', '/hit/3'],
    ['GET', '/obj/7'],
    ['GET', '/stats'],
    ['GET', '/'],
    ['HEAD', '/obj/2'],
    ['GET', '/hit/99'],
    ['PUT', '/hit/1'],
  ];
  for (const [method, target] of requests) {
    const args = [bytes(method), bytes(target), new Uint8Array(0)];
    tx.begin(); // a dry run counts the accesses an uninterrupted run makes
    server.execute(args);
    const n = tx.accesses;
    assert.ok(n >= 2, `${target}: ${n} accesses`);
    for (let f = 0; f < n; f++) {
      tx.begin(f);
      assert.throws(() => server.execute(args), PageNotPresent);
      interruptions++;
      assert.deepEqual(tx.committed, refMem.bytes, 'an interrupted run changed committed RAM');
    }
    const want = text(ref.execute(args));
    tx.begin();
    assert.equal(text(server.execute(args)), want, `${method} ${target}`);
    tx.commit();
    assert.deepEqual(tx.committed, refMem.bytes, `RAM differs after ${method} ${target}`);
  }
  assert.deepEqual(server.stats(), { requests: requests.length, hits: 2, objects: 8 });
  assert.ok(interruptions >= 3 * requests.length);
});

// ---------------------------------------------------------------------------------------
// Registration among the apps

test('apps: http is registered, speaks HTTP_PROTOCOL and reports requests and hits', () => {
  assert.ok((APP_KINDS as readonly string[]).includes('http'));
  assert.equal(protocolOf('http'), HTTP_PROTOCOL);
  assert.equal(HTTP_PROTOCOL.name, 'http');
  assert.equal(protocolOf('kv').name, 'resp');
  const mem = new ArrayAccess(new Uint8Array(1 << 20));
  formatApp('http', { objects: 16, counters: 64 }, mem);
  assert.deepEqual(appStats('http', {}, mem), { requests: 0, hits: 0 });
  const app = openApp('http', {}, mem);
  // curl's request, framed as the NIC frames it, served by the app
  const framer = protocolOf('http').framer();
  const { requests } = framer.push(
    bytes(
      'POST /hit/63 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n' +
        'GET /obj/15 HTTP/1.1\r\nHost: localhost\r\n\r\n' +
        'GET /stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n',
    ),
  );
  const replies = requests.map((r) => parseResponse(app.execute!(r.args)));
  assert.deepEqual(
    replies.map((r) => r.status),
    [200, 200, 200],
  );
  assert.equal(replies[0].body, '1\n');
  assert.equal(replies[1].body, text(httpObjectContent(15)));
  assert.deepEqual(JSON.parse(replies[2].body), { requests: 3, hits: 1, objects: 16 });
  assert.equal(requests[2].close, true);
  assert.deepEqual(appStats('http', {}, mem), { requests: 3, hits: 1 });
  // the default options fit a 4 MiB region
  const big = new ArrayAccess(new Uint8Array(4 << 20));
  formatApp('http', {}, big);
  assert.equal(HttpServer.open(big).stats().objects, 256);
});

test('apps: openApp opens lazily, appStats reads the header page only, failed() is a 500', () => {
  const inner = new ArrayAccess(new Uint8Array(1 << 20));
  formatApp('http', { objects: 8, counters: 8 }, inner);
  const counting = new CountingAccess(inner);
  const app = openApp('http', {}, counting);
  assert.equal(counting.accesses, 0, 'openApp touched guest RAM');
  assert.equal(parseResponse(app.execute!([bytes('GET'), bytes('/hit/2'), new Uint8Array(0)])).body, '1\n');
  assert.ok(counting.accesses > 0);
  assert.deepEqual(appStats('http', {}, new CountingAccess(inner, 4096)), { requests: 1, hits: 1 });
  const failed = parseResponse(app.failed!(new Error('page 7\r\nmissing')));
  assert.equal(failed.status, 500);
  assert.equal(failed.headers.get('connection'), 'close');
  assert.equal(failed.body, 'internal error: page 7 missing\n');
  // opening RAM without the app fails inside the request, where failed() answers it
  const empty = openApp('http', {}, new ArrayAccess(new Uint8Array(8192)));
  assert.throws(() => empty.execute!([bytes('GET'), bytes('/'), new Uint8Array(0)]), HttpFormatError);
});
