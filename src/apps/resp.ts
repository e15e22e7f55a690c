// RESP2, the Redis serialization protocol, as spoken by redis-cli and redis-benchmark.
//
// `RespParser` turns the bytes a client sends into commands (arrays of bulk strings, or
// inline commands such as `PING\r\n`). It is streaming: partial input stays buffered until
// the command is complete, several pipelined commands in one chunk come out together. It
// never throws on input and never waits forever: malformed input or input over a limit
// gives a typed protocol error, after which the parser refuses further input (Redis closes
// the connection at that point). Its buffered partial command can be exported as plain
// data and imported elsewhere: it is connection state that moves with a VM at switchover.
//
// The encoders build server replies; `encodeCommand` builds what a client sends, and
// `RespReplyParser` reads replies back (a client's side of the protocol).
//
// Pure module: no Node imports, so it runs inside vCPU worker threads.

import type { Framer, WireProtocol } from './protocol.ts';

const CR = 13;
const LF = 10;
const STAR = 42; // '*'
const DOLLAR = 36; // '$'
const MINUS = 45; // '-'
const ZERO = 48;
const NINE = 57;

/** Redis's proto-max-bulk-len default. */
export const DEFAULT_MAX_BULK_LENGTH = 512 * 1024 * 1024;
/** Arguments in one multibulk command. */
export const DEFAULT_MAX_ARRAY_LENGTH = 1024 * 1024;
/** An inline command, and a `*n` / `$n` header line, without a line end (Redis: 64 KiB). */
export const DEFAULT_MAX_INLINE_LENGTH = 64 * 1024;

export type RespErrorCode =
  | 'expected-bulk'
  | 'invalid-multibulk-length'
  | 'invalid-bulk-length'
  | 'missing-crlf'
  | 'too-big-count'
  | 'too-big-inline'
  | 'unbalanced-quotes';

export interface RespProtocolError {
  code: RespErrorCode;
  /** For the client, e.g. `protocol error: expected '$', got '?'`. */
  message: string;
}

export interface RespResult {
  /** Complete commands, in arrival order; each argument is a fresh copy. */
  commands: Uint8Array[][];
  /** Set when the input was malformed; commands before the bad one are still returned. */
  error?: RespProtocolError;
}

export interface RespParserOptions {
  maxBulkLength?: number;
  maxArrayLength?: number;
  maxInlineLength?: number;
}

/** The parser's connection state as plain data. */
export interface RespParserState {
  /** Bytes of the incomplete command at the end of the stream (empty when idle). */
  pending: Uint8Array;
  /** The protocol error the parser stopped at, if any. */
  error: RespProtocolError | null;
}

const IDLE = 0;
const COUNT = 1;
const ARGS = 2;
const INLINE = 3;
const NEED_MORE = 1;
const INITIAL_CAPACITY = 16 * 1024;

function protocolError(code: RespErrorCode, what: string): RespProtocolError {
  return { code, message: `protocol error: ${what}` };
}

function showByte(b: number): string {
  return b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
}

/**
 * A strict decimal integer in `buf[from, to)` (optional '-', no leading zeros, at most 15
 * digits so the value is exact): the value, or NaN.
 */
function parseDecimal(buf: Uint8Array, from: number, to: number): number {
  let i = from;
  let negative = false;
  if (i < to && buf[i] === MINUS) {
    negative = true;
    i++;
  }
  const digits = to - i;
  if (digits < 1 || digits > 15) return Number.NaN;
  if (buf[i] === ZERO) return digits === 1 && !negative ? 0 : Number.NaN;
  let n = 0;
  for (; i < to; i++) {
    const c = buf[i];
    if (c < ZERO || c > NINE) return Number.NaN;
    n = n * 10 + (c - ZERO);
  }
  return negative ? -n : n;
}

function positiveLimit(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!(Number.isSafeInteger(value) && value >= 1))
    throw new RangeError(`RespParser option ${name} must be a positive integer, got ${value}`);
  return value;
}

function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

/** Ends an unquoted word (unlike isSpace, not \v or \f). */
function isSeparator(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13;
}

function hexValue(c: number): number {
  if (c >= ZERO && c <= NINE) return c - ZERO;
  const l = c | 0x20;
  return l >= 97 && l <= 102 ? l - 87 : -1;
}

/**
 * Splits an inline command line like Redis's sdssplitargs: whitespace-separated words,
 * "double quotes" with \n \r \t \b \a \\ \" \xHH escapes, 'single quotes' with \'. A
 * closing quote must be followed by whitespace or the end; a NUL byte ends the line. Null
 * on unbalanced quotes.
 */
export function splitInlineArgs(buf: Uint8Array, from: number, to: number): Uint8Array[] | null {
  const args: Uint8Array[] = [];
  // Redis splits a C string: a NUL byte ends the line.
  const nul = buf.subarray(from, to).indexOf(0);
  if (nul >= 0) to = from + nul;
  let p = from;
  for (;;) {
    while (p < to && isSpace(buf[p])) p++;
    if (p >= to) return args;
    // Fast path: a plain word without quotes.
    let q = p;
    while (q < to && !isSeparator(buf[q]) && buf[q] !== 34 && buf[q] !== 39) q++;
    if (q >= to || isSeparator(buf[q])) {
      args.push(buf.slice(p, q));
      p = q;
      continue;
    }
    const out: number[] = [];
    for (let i = p; i < q; i++) out.push(buf[i]);
    p = q;
    let inDouble = false;
    let inSingle = false;
    let done = false;
    while (!done) {
      const c = p < to ? buf[p] : -1;
      if (inDouble) {
        if (c === -1) return null;
        if (
          c === 92 &&
          p + 3 < to &&
          buf[p + 1] === 120 &&
          hexValue(buf[p + 2]) >= 0 &&
          hexValue(buf[p + 3]) >= 0
        ) {
          out.push(hexValue(buf[p + 2]) * 16 + hexValue(buf[p + 3]));
          p += 3;
        } else if (c === 92 && p + 1 < to) {
          p++;
          const e = buf[p];
          out.push(e === 110 ? 10 : e === 114 ? 13 : e === 116 ? 9 : e === 98 ? 8 : e === 97 ? 7 : e);
        } else if (c === 34) {
          if (p + 1 < to && !isSpace(buf[p + 1])) return null;
          done = true;
        } else out.push(c);
      } else if (inSingle) {
        if (c === -1) return null;
        if (c === 92 && p + 1 < to && buf[p + 1] === 39) {
          p++;
          out.push(39);
        } else if (c === 39) {
          if (p + 1 < to && !isSpace(buf[p + 1])) return null;
          done = true;
        } else out.push(c);
      } else if (c === -1 || isSeparator(c)) {
        done = true;
      } else if (c === 34) inDouble = true;
      else if (c === 39) inSingle = true;
      else out.push(c);
      if (p < to) p++;
    }
    args.push(Uint8Array.from(out));
  }
}

/** The server side of RESP2: client bytes in, commands out. */
export class RespParser {
  readonly maxBulkLength: number;
  readonly maxArrayLength: number;
  readonly maxInlineLength: number;
  private buf: Uint8Array;
  /** First byte of the incomplete command. */
  private start = 0;
  private end = 0;
  /** Parse cursor. */
  private pos = 0;
  /** Where the search for a line end resumes. */
  private scan = 0;
  private phase = IDLE;
  /** Arguments the current multibulk command announced, and those read so far. */
  private argc = 0;
  private args: Uint8Array[] = [];
  /** Length of the bulk string being waited for, or -1 before its `$n` line. */
  private bulkLen = -1;
  private failure: RespProtocolError | null = null;

  constructor(options: RespParserOptions = {}) {
    this.maxBulkLength = positiveLimit('maxBulkLength', options.maxBulkLength, DEFAULT_MAX_BULK_LENGTH);
    this.maxArrayLength = positiveLimit('maxArrayLength', options.maxArrayLength, DEFAULT_MAX_ARRAY_LENGTH);
    this.maxInlineLength = positiveLimit(
      'maxInlineLength',
      options.maxInlineLength,
      DEFAULT_MAX_INLINE_LENGTH,
    );
    this.buf = new Uint8Array(INITIAL_CAPACITY);
  }

  /** A parser that continues from `state` (see `state()`). Throws TypeError on a bad state. */
  static fromState(state: RespParserState, options: RespParserOptions = {}): RespParser {
    const p = new RespParser(options);
    if (state === null || typeof state !== 'object' || !(state.pending instanceof Uint8Array))
      throw new TypeError('RESP parser state: pending must be a Uint8Array');
    const e = state.error;
    if (e !== null && (typeof e !== 'object' || typeof e.code !== 'string' || typeof e.message !== 'string'))
      throw new TypeError('RESP parser state: error must be null or { code, message }');
    if (e !== null) {
      p.failure = { code: e.code, message: e.message };
      return p;
    }
    // Loaded unparsed; the next push() parses it together with the new bytes.
    p.ensureCapacity(state.pending.length);
    p.buf.set(state.pending, 0);
    p.end = state.pending.length;
    return p;
  }

  /** The buffered incomplete command (a copy) and any error, as plain data. */
  state(): RespParserState {
    return {
      pending: this.buf.slice(this.start, this.end),
      error: this.failure === null ? null : { ...this.failure },
    };
  }

  /** Bytes buffered for an incomplete command. */
  get pendingBytes(): number {
    return this.end - this.start;
  }

  /** The error the parser stopped at, or null. */
  get error(): RespProtocolError | null {
    return this.failure;
  }

  push(chunk: Uint8Array): RespResult {
    if (this.failure !== null) return { commands: [], error: this.failure };
    this.append(chunk);
    const commands: Uint8Array[][] = [];
    const error = this.parse(commands);
    if (error !== null) {
      this.failure = error;
      this.buf = new Uint8Array(0);
      this.start = this.end = this.pos = this.scan = 0;
      this.args = [];
      return { commands, error };
    }
    if (this.start === this.end && this.buf.length > 4 * INITIAL_CAPACITY) {
      this.buf = new Uint8Array(INITIAL_CAPACITY);
      this.start = this.end = this.pos = this.scan = 0;
    }
    return { commands };
  }

  private ensureCapacity(extra: number): void {
    if (this.end + extra <= this.buf.length) return;
    const live = this.end - this.start;
    const shift = this.start;
    if (live + extra <= this.buf.length && shift > 0) {
      this.buf.copyWithin(0, shift, this.end);
    } else {
      const next = new Uint8Array(Math.max(this.buf.length * 2, live + extra, INITIAL_CAPACITY));
      next.set(this.buf.subarray(shift, this.end), 0);
      this.buf = next;
    }
    this.start = 0;
    this.end = live;
    this.pos -= shift;
    this.scan -= shift;
  }

  private append(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.phase === IDLE && this.start === this.end) this.start = this.end = this.pos = this.scan = 0;
    this.ensureCapacity(chunk.length);
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  /**
   * Finds the CRLF ending the header line that starts at `this.pos`: the index of its CR,
   * -1 while incomplete, or a protocol error.
   */
  private headerLineEnd(what: 'mbulk' | 'bulk'): number | RespProtocolError {
    const buf = this.buf;
    let i = Math.max(this.scan, this.pos + 1);
    while (i < this.end && buf[i] !== CR) i++;
    if (i < this.end) {
      // The same limit whether or not the line end has arrived, so chunking never matters.
      if (i - this.pos > this.maxInlineLength)
        return protocolError('too-big-count', `too big ${what} count string`);
      if (i + 1 >= this.end) {
        this.scan = i;
        return -1;
      }
      if (buf[i + 1] !== LF)
        return protocolError('missing-crlf', `expected '\\n' after '\\r', got '${showByte(buf[i + 1])}'`);
      return i;
    }
    this.scan = i;
    if (this.end - this.pos > this.maxInlineLength)
      return protocolError('too-big-count', `too big ${what} count string`);
    return -1;
  }

  /** Parses complete commands into `out`; null, or the protocol error that stopped it. */
  private parse(out: Uint8Array[][]): RespProtocolError | null {
    const buf = this.buf;
    for (;;) {
      if (this.phase === IDLE) {
        this.start = this.pos;
        this.scan = this.pos;
        if (this.pos >= this.end) return null;
        this.phase = buf[this.pos] === STAR ? COUNT : INLINE;
      }
      if (this.phase === INLINE) {
        const r = this.parseInline(out);
        if (r === NEED_MORE) return null;
        if (r !== null) return r;
        continue;
      }
      if (this.phase === COUNT) {
        const cr = this.headerLineEnd('mbulk');
        if (typeof cr !== 'number') return cr;
        if (cr < 0) return null;
        const n = parseDecimal(buf, this.pos + 1, cr);
        if (Number.isNaN(n) || n > this.maxArrayLength)
          return protocolError('invalid-multibulk-length', 'invalid multibulk length');
        this.pos = cr + 2;
        this.scan = this.pos;
        if (n <= 0) {
          this.phase = IDLE; // like Redis: an empty or null multibulk is skipped
          continue;
        }
        this.argc = n;
        this.args = [];
        this.bulkLen = -1;
        this.phase = ARGS;
      }
      // ARGS
      while (this.args.length < this.argc) {
        if (this.bulkLen < 0) {
          if (this.pos >= this.end) return null;
          const c = buf[this.pos];
          if (c !== DOLLAR) return protocolError('expected-bulk', `expected '$', got '${showByte(c)}'`);
          const cr = this.headerLineEnd('bulk');
          if (typeof cr !== 'number') return cr;
          if (cr < 0) return null;
          const n = parseDecimal(buf, this.pos + 1, cr);
          if (!(n >= 0 && n <= this.maxBulkLength))
            return protocolError('invalid-bulk-length', 'invalid bulk length');
          this.pos = cr + 2;
          this.scan = this.pos;
          this.bulkLen = n;
        }
        const n = this.bulkLen;
        if (this.end - this.pos < n + 2) return null;
        if (buf[this.pos + n] !== CR || buf[this.pos + n + 1] !== LF)
          return protocolError('missing-crlf', `expected CRLF after a bulk string of ${n} bytes`);
        this.args.push(buf.slice(this.pos, this.pos + n));
        this.pos += n + 2;
        this.scan = this.pos;
        this.bulkLen = -1;
      }
      out.push(this.args);
      this.args = [];
      this.phase = IDLE;
    }
  }

  private parseInline(out: Uint8Array[][]): RespProtocolError | typeof NEED_MORE | null {
    const buf = this.buf;
    let i = Math.max(this.scan, this.pos);
    while (i < this.end && buf[i] !== LF) i++;
    if (i >= this.end) {
      this.scan = i;
      if (this.end - this.pos > this.maxInlineLength)
        return protocolError('too-big-inline', 'too big inline request');
      return NEED_MORE;
    }
    if (i - this.pos > this.maxInlineLength) return protocolError('too-big-inline', 'too big inline request');
    const lineEnd = i > this.pos && buf[i - 1] === CR ? i - 1 : i;
    const args = splitInlineArgs(buf, this.pos, lineEnd);
    if (args === null) return protocolError('unbalanced-quotes', 'unbalanced quotes in request');
    this.pos = i + 1;
    this.scan = this.pos;
    this.phase = IDLE;
    if (args.length > 0) out.push(args);
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// Encoders

const utf8 = new TextEncoder();

function bytesOf(s: string | Uint8Array): Uint8Array {
  return typeof s === 'string' ? utf8.encode(s) : s;
}

/** `prefix` + text (CR and LF become spaces, so the reply stays one line) + CRLF. */
function line(prefix: number, text: string | Uint8Array): Uint8Array {
  const body = bytesOf(text);
  const out = new Uint8Array(body.length + 3);
  out[0] = prefix;
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    out[i + 1] = c === CR || c === LF ? 32 : c;
  }
  out[body.length + 1] = CR;
  out[body.length + 2] = LF;
  return out;
}

/** Writes the ASCII digits of a non-negative safe integer at `at`; returns the end. */
function writeDigits(out: Uint8Array, at: number, n: number): number {
  const len = digitCount(n);
  for (let i = at + len - 1; i >= at; i--) {
    out[i] = ZERO + (n % 10);
    n = Math.floor(n / 10);
  }
  return at + len;
}

function digitCount(n: number): number {
  let d = 1;
  while (n >= 10) {
    n = Math.floor(n / 10);
    d++;
  }
  return d;
}

/** `+text\r\n` */
export function encodeSimple(text: string | Uint8Array): Uint8Array {
  return line(43, text);
}

/** `-message\r\n`; the message starts with the error kind, e.g. `ERR syntax error`. */
export function encodeError(message: string | Uint8Array): Uint8Array {
  return line(MINUS, message);
}

/** `:n\r\n` */
export function encodeInteger(n: number | bigint): Uint8Array {
  if (typeof n === 'number' && !Number.isSafeInteger(n))
    throw new RangeError(`RESP integer must be a safe integer, got ${n}`);
  if (typeof n === 'number' && n >= 0) {
    const out = new Uint8Array(digitCount(n) + 3);
    out[0] = 58;
    const e = writeDigits(out, 1, n);
    out[e] = CR;
    out[e + 1] = LF;
    return out;
  }
  return line(58, String(n));
}

export const NIL_BULK: Uint8Array = utf8.encode('$-1\r\n');
export const NIL_ARRAY: Uint8Array = utf8.encode('*-1\r\n');
export const EMPTY_ARRAY: Uint8Array = utf8.encode('*0\r\n');
export const OK: Uint8Array = utf8.encode('+OK\r\n');

/** `$n\r\n<bytes>\r\n`, or `$-1\r\n` for null. Strings are sent as UTF-8. */
export function encodeBulk(value: Uint8Array | string | null): Uint8Array {
  if (value === null) return NIL_BULK.slice();
  const body = bytesOf(value);
  const n = body.length;
  const out = new Uint8Array(digitCount(n) + n + 5);
  out[0] = DOLLAR;
  let at = writeDigits(out, 1, n);
  out[at++] = CR;
  out[at++] = LF;
  out.set(body, at);
  at += n;
  out[at++] = CR;
  out[at] = LF;
  return out;
}

/** `*n\r\n` followed by the already-encoded items, or `*-1\r\n` for null. */
export function encodeArray(items: readonly Uint8Array[] | null): Uint8Array {
  if (items === null) return NIL_ARRAY.slice();
  let total = digitCount(items.length) + 3;
  for (const it of items) total += it.length;
  const out = new Uint8Array(total);
  out[0] = STAR;
  let at = writeDigits(out, 1, items.length);
  out[at++] = CR;
  out[at++] = LF;
  for (const it of items) {
    out.set(it, at);
    at += it.length;
  }
  return out;
}

/** What a client sends: an array of bulk strings. */
export function encodeCommand(args: readonly (Uint8Array | string)[]): Uint8Array {
  return encodeArray(args.map((a) => encodeBulk(a)));
}

// ---------------------------------------------------------------------------------------
// Replies (the client side)

export type RespValue =
  | { type: 'simple'; value: string }
  | { type: 'error'; value: string }
  | { type: 'integer'; value: bigint }
  | { type: 'bulk'; value: Uint8Array | null }
  | { type: 'array'; value: RespValue[] | null };

export interface RespReplyResult {
  replies: RespValue[];
  error?: RespProtocolError;
}

const MAX_REPLY_DEPTH = 64;
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true }); // a leading U+FEFF is text too

/** Thrown inside the reply parser only; turned into a result. */
class ReplyFailure extends Error {
  constructor(readonly error: RespProtocolError) {
    super(error.message);
  }
}

/**
 * The client side of RESP2: server bytes in, typed replies out. A reply that is not yet
 * complete is re-read from its start when more bytes arrive, except that a known missing
 * bulk payload is waited for without re-reading.
 */
export class RespReplyParser {
  private buf = new Uint8Array(0);
  private start = 0;
  private end = 0;
  /** Bytes needed (absolute end) before re-reading the pending reply is worth it. */
  private needEnd = 0;
  private failure: RespProtocolError | null = null;

  constructor(readonly maxBulkLength = DEFAULT_MAX_BULK_LENGTH) {}

  push(chunk: Uint8Array): RespReplyResult {
    if (this.failure !== null) return { replies: [], error: this.failure };
    if (this.end + chunk.length > this.buf.length) {
      const live = this.end - this.start;
      const next = new Uint8Array(Math.max(this.buf.length * 2, live + chunk.length, 4096));
      next.set(this.buf.subarray(this.start, this.end), 0);
      this.needEnd -= this.start;
      this.buf = next;
      this.start = 0;
      this.end = live;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
    const replies: RespValue[] = [];
    if (this.end < this.needEnd) return { replies };
    try {
      while (this.start < this.end) {
        const r = this.value(this.start, 0);
        if (r === null) break;
        replies.push(r[0]);
        this.start = r[1];
        this.needEnd = 0;
      }
    } catch (e) {
      if (!(e instanceof ReplyFailure)) throw e;
      this.failure = e.error;
      return { replies, error: e.error };
    }
    return { replies };
  }

  private lineEnd(from: number): number {
    for (let i = from; i + 1 < this.end; i++) {
      if (this.buf[i] === CR) {
        if (i - from > DEFAULT_MAX_INLINE_LENGTH)
          throw new ReplyFailure(protocolError('too-big-inline', 'reply line too long'));
        if (this.buf[i + 1] !== LF)
          throw new ReplyFailure(protocolError('missing-crlf', "expected '\\n' after '\\r'"));
        return i;
      }
    }
    if (this.end - from > DEFAULT_MAX_INLINE_LENGTH)
      throw new ReplyFailure(protocolError('too-big-inline', 'reply line too long'));
    return -1;
  }

  private value(at: number, depth: number): [RespValue, number] | null {
    if (at >= this.end) return null;
    const t = this.buf[at];
    if (t !== 43 && t !== MINUS && t !== 58 && t !== DOLLAR && t !== STAR)
      throw new ReplyFailure(protocolError('expected-bulk', `unknown reply type '${showByte(t)}'`));
    const cr = this.lineEnd(at + 1);
    if (cr < 0) return null;
    const text = () => utf8Decoder.decode(this.buf.subarray(at + 1, cr));
    switch (t) {
      case 43:
        return [{ type: 'simple', value: text() }, cr + 2];
      case MINUS:
        return [{ type: 'error', value: text() }, cr + 2];
      case 58: {
        const s = text();
        if (!/^-?(0|[1-9][0-9]*)$/.test(s))
          throw new ReplyFailure(protocolError('invalid-bulk-length', `invalid integer '${s}'`));
        return [{ type: 'integer', value: BigInt(s) }, cr + 2];
      }
      case DOLLAR: {
        const n = parseDecimal(this.buf, at + 1, cr);
        if (n === -1) return [{ type: 'bulk', value: null }, cr + 2];
        if (!(n >= 0 && n <= this.maxBulkLength))
          throw new ReplyFailure(protocolError('invalid-bulk-length', 'invalid bulk length'));
        const from = cr + 2;
        if (this.end < from + n + 2) {
          this.needEnd = from + n + 2;
          return null;
        }
        if (this.buf[from + n] !== CR || this.buf[from + n + 1] !== LF)
          throw new ReplyFailure(
            protocolError('missing-crlf', `expected CRLF after a bulk string of ${n} bytes`),
          );
        return [{ type: 'bulk', value: this.buf.slice(from, from + n) }, from + n + 2];
      }
      case STAR: {
        const n = parseDecimal(this.buf, at + 1, cr);
        if (n === -1) return [{ type: 'array', value: null }, cr + 2];
        if (!(n >= 0 && n <= DEFAULT_MAX_ARRAY_LENGTH))
          throw new ReplyFailure(protocolError('invalid-multibulk-length', 'invalid multibulk length'));
        if (depth >= MAX_REPLY_DEPTH)
          throw new ReplyFailure(protocolError('invalid-multibulk-length', 'replies nested too deeply'));
        const items: RespValue[] = [];
        let p = cr + 2;
        for (let i = 0; i < n; i++) {
          const r = this.value(p, depth + 1);
          if (r === null) return null;
          items.push(r[0]);
          p = r[1];
        }
        return [{ type: 'array', value: items }, p];
      }
      default:
        throw new ReplyFailure(protocolError('expected-bulk', `unknown reply type '${showByte(t)}'`));
    }
  }
}

/** RESP2 as a VM's wire protocol: each command is one request. */
export const RESP_PROTOCOL: WireProtocol = {
  name: 'resp',
  framer(): Framer {
    const parser = new RespParser();
    return {
      push(bytes) {
        const r = parser.push(bytes);
        const requests = r.commands.map((args) => ({ args }));
        if (!r.error) return { requests };
        return {
          requests,
          error: { message: r.error.message, reply: encodeError(`ERR ${r.error.message}`) },
        };
      },
      pending: () => parser.state().pending,
    };
  },
};
