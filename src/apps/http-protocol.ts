// HTTP/1.1 as a VM's wire protocol, for clients such as `curl` and `wrk`: the framer splits
// a connection's bytes into requests, each `{ args: [method, target, body], close }`
// (method and target as the bytes sent, the body empty when there is none).
//
// What it accepts:
// - a request line `METHOD SP target SP HTTP/1.x`, then header lines `name: value`, then an
//   empty line; lines end in CRLF or a bare LF; empty lines before a request line are
//   skipped (RFC 9112 §2.2);
// - a body only by `Content-Length` (several equal values, or a list of equal values, count
//   as one); `Transfer-Encoding` is not supported;
// - any number of pipelined requests per chunk, and requests cut anywhere between chunks:
//   the bytes of the incomplete request at the end are kept, and `pending()` returns them.
//   A request is parsed only once its head (request line and headers) is complete, so the
//   outcome does not depend on where the stream was cut.
// - `close` is set for `Connection: close`, and for HTTP/1.0 without `Connection: keep-alive`.
//
// Malformed input gets an error whose `reply` is a complete response with `Connection:
// close` and a one-line text body:
//   400 a bad request line, header line, HTTP version or Content-Length
//   413 a Content-Length over the body limit (1 MiB), answered without waiting for the body
//   431 a request line and headers over 16 KiB together
//   501 a request with Transfer-Encoding
//   505 a well-formed version other than HTTP/1.x
// After an error the framer takes no further input: every push returns the same error.
// A `Host` header is not required, and `Expect: 100-continue` gets no interim response
// (a client sends its body after its own timeout).
//
// Pure module: no Node imports (it runs wherever a VM's network device runs).

import type { ClientRequest, Framer, FramerResult, WireProtocol } from './protocol.ts';

/** Bytes of a request line and its headers, with their line ends and the empty line. */
export const HTTP_MAX_HEAD_BYTES = 16 * 1024;
/** Bytes of a request body (its Content-Length). */
export const HTTP_MAX_BODY_BYTES = 1024 * 1024;

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;
const COLON = 58;
const COMMA = 44;

const utf8 = new TextEncoder();

const REASONS: Record<number, string> = {
  200: 'OK',
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  413: 'Content Too Large',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  505: 'HTTP Version Not Supported',
};

/** The reason phrase of a status code ('Unknown' for one this module does not name). */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? 'Unknown';
}

export interface ResponseOptions {
  /** Default `text/plain; charset=utf-8`. */
  contentType?: string;
  /** More header lines, e.g. `['Allow', 'GET, HEAD']`. */
  headers?: readonly (readonly [string, string])[];
  /** `Connection: close` instead of `Connection: keep-alive`. */
  close?: boolean;
  /** Leave the body out but keep its Content-Length (the reply to HEAD). */
  omitBody?: boolean;
}

/** A complete HTTP/1.1 response: status line, Content-Type, Content-Length, Connection, body. */
export function encodeResponse(
  status: number,
  body: Uint8Array | string,
  options: ResponseOptions = {},
): Uint8Array {
  const payload = typeof body === 'string' ? utf8.encode(body) : body;
  let head = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\n`;
  head += `Content-Type: ${options.contentType ?? 'text/plain; charset=utf-8'}\r\n`;
  head += `Content-Length: ${payload.length}\r\n`;
  for (const [name, value] of options.headers ?? []) head += `${name}: ${value}\r\n`;
  head += `Connection: ${options.close ? 'close' : 'keep-alive'}\r\n\r\n`;
  const headBytes = utf8.encode(head);
  if (options.omitBody) return headBytes;
  const out = new Uint8Array(headBytes.length + payload.length);
  out.set(headBytes, 0);
  out.set(payload, headBytes.length);
  return out;
}

/** A text response whose body is `message` and a newline. */
export function textResponse(status: number, message: string, options: ResponseOptions = {}): Uint8Array {
  return encodeResponse(status, `${message}\n`, options);
}

/** tchar (RFC 9110 §5.6.2): the bytes of a method or a header name. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
  TCHAR[c.charCodeAt(0)] = 1;

interface Failure {
  message: string;
  reply: Uint8Array;
}

function failure(status: number, message: string): Failure {
  return { message, reply: textResponse(status, message, { close: true }) };
}

/** A parsed request head waiting for its body. */
interface Head {
  method: Uint8Array;
  target: Uint8Array;
  close: boolean;
  /** Bytes of the head, from the request line through the empty line. */
  headLength: number;
  bodyLength: number;
}

export interface HttpFramerLimits {
  maxHeadBytes: number;
  maxBodyBytes: number;
}

/** One connection's HTTP/1.1 request parser (see the module comment). */
export class HttpFramer implements Framer {
  private buf = new Uint8Array(0);
  /** The unparsed bytes are buf[start, end). */
  private start = 0;
  private end = 0;
  /** Where the search for the end of the head resumes, relative to `start`. */
  private scanOffset = 0;
  /** The start of the line that search is in, relative to `start`. */
  private lineOffset = 0;
  private head: Head | null = null;
  private failed: Failure | null = null;
  private readonly limits: HttpFramerLimits;

  constructor(limits: Partial<HttpFramerLimits> = {}) {
    this.limits = {
      maxHeadBytes: limits.maxHeadBytes ?? HTTP_MAX_HEAD_BYTES,
      maxBodyBytes: limits.maxBodyBytes ?? HTTP_MAX_BODY_BYTES,
    };
  }

  push(bytes: Uint8Array): FramerResult {
    if (this.failed !== null) return { requests: [], error: this.failed };
    this.append(bytes);
    const requests: ClientRequest[] = [];
    for (;;) {
      const r = this.next();
      if (r === null) break;
      if ('reply' in r) {
        this.failed = r;
        return { requests, error: r };
      }
      requests.push(r);
    }
    if (this.start === this.end) {
      this.start = 0;
      this.end = 0;
      if (this.buf.length > 64 * 1024) this.buf = new Uint8Array(0);
    }
    return { requests };
  }

  pending(): Uint8Array {
    return this.buf.slice(this.start, this.end);
  }

  private append(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (this.end + bytes.length > this.buf.length) {
      const live = this.end - this.start;
      if (live + bytes.length <= this.buf.length) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        const next = new Uint8Array(Math.max(this.buf.length * 2, live + bytes.length, 4096));
        next.set(this.buf.subarray(this.start, this.end), 0);
        this.buf = next;
      }
      this.start = 0;
      this.end = live;
    }
    this.buf.set(bytes, this.end);
    this.end += bytes.length;
  }

  /** The next complete request, a failure, or null when more bytes are needed. */
  private next(): ClientRequest | Failure | null {
    const buf = this.buf;
    if (this.head === null) {
      if (this.scanOffset === 0) {
        // empty lines before a request line
        while (this.start < this.end) {
          const c = buf[this.start];
          if (c === LF) this.start++;
          else if (c === CR) {
            if (this.start + 1 >= this.end) return null;
            if (buf[this.start + 1] !== LF) break;
            this.start += 2;
          } else break;
        }
        if (this.start >= this.end) return null;
      }
      const start = this.start;
      const stop = Math.min(this.end, start + this.limits.maxHeadBytes);
      let lineStart = start + this.lineOffset;
      let headEnd = -1;
      let i = start + this.scanOffset;
      for (; i < stop; i++) {
        if (buf[i] !== LF) continue;
        if (i === lineStart || (i === lineStart + 1 && buf[lineStart] === CR)) {
          headEnd = i + 1;
          break;
        }
        lineStart = i + 1;
      }
      if (headEnd < 0) {
        // the empty line would end at `end` or later: the head would be too long
        if (this.end - start >= this.limits.maxHeadBytes)
          return failure(431, `request line and headers over ${this.limits.maxHeadBytes} bytes`);
        this.scanOffset = i - start;
        this.lineOffset = lineStart - start;
        return null;
      }
      this.scanOffset = 0;
      this.lineOffset = 0;
      const head = this.parseHead(start, headEnd);
      if ('reply' in head) return head;
      this.head = head;
    }
    const head = this.head;
    const bodyAt = this.start + head.headLength;
    if (this.end - bodyAt < head.bodyLength) return null;
    const body = buf.slice(bodyAt, bodyAt + head.bodyLength);
    this.start = bodyAt + head.bodyLength;
    this.head = null;
    return { args: [head.method, head.target, body], close: head.close };
  }

  /** The head in buf[from, to), which ends with its empty line. */
  private parseHead(from: number, to: number): Head | Failure {
    const buf = this.buf;
    /** The end of the line starting at `at`, before its CR LF or LF. */
    const lineEnd = (at: number): [number, number] => {
      let i = at;
      while (buf[i] !== LF) i++;
      return [i > at && buf[i - 1] === CR ? i - 1 : i, i + 1];
    };

    // request line: method SP target SP version
    const [rlEnd, afterRl] = lineEnd(from);
    let i = from;
    while (i < rlEnd && TCHAR[buf[i]]) i++;
    if (i === from || i >= rlEnd || buf[i] !== SP) return failure(400, 'bad request line');
    const method = buf.slice(from, i);
    const targetAt = ++i;
    while (i < rlEnd && buf[i] > SP && buf[i] !== 0x7f) i++;
    if (i === targetAt || i >= rlEnd || buf[i] !== SP) return failure(400, 'bad request line');
    const target = buf.slice(targetAt, i);
    const v = i + 1;
    if (
      rlEnd - v !== 8 ||
      latin1(buf, v, v + 5) !== 'HTTP/' ||
      !isDigit(buf[v + 5]) ||
      buf[v + 6] !== 46 ||
      !isDigit(buf[v + 7])
    )
      return failure(400, 'bad HTTP version');
    if (buf[v + 5] !== 49) return failure(505, `${latin1(buf, v, v + 8)} is not supported`);
    const http10 = buf[v + 7] === 48;

    // header lines, up to the empty line
    let lengths: string[] = [];
    let chunked = false;
    let closeToken = false;
    let keepAliveToken = false;
    let at = afterRl;
    while (at < to) {
      const [end, next] = lineEnd(at);
      if (end === at) break;
      let n = at;
      while (n < end && TCHAR[buf[n]]) n++;
      if (n === at || n >= end || buf[n] !== COLON) return failure(400, 'bad header line');
      let vs = n + 1;
      let ve = end;
      while (vs < ve && (buf[vs] === SP || buf[vs] === HTAB)) vs++;
      while (ve > vs && (buf[ve - 1] === SP || buf[ve - 1] === HTAB)) ve--;
      for (let k = vs; k < ve; k++) {
        const c = buf[k];
        if ((c < SP && c !== HTAB) || c === 0x7f) return failure(400, 'bad header line');
      }
      const name = latin1(buf, at, n).toLowerCase();
      if (name === 'content-length') lengths = lengths.concat(listItems(buf, vs, ve));
      else if (name === 'transfer-encoding') chunked = true;
      else if (name === 'connection') {
        for (const token of listItems(buf, vs, ve)) {
          const t = token.toLowerCase();
          if (t === 'close') closeToken = true;
          else if (t === 'keep-alive') keepAliveToken = true;
        }
      }
      at = next;
    }
    if (chunked) return failure(501, 'Transfer-Encoding is not supported');
    let bodyLength = 0;
    if (lengths.length > 0) {
      let digits = '';
      for (const item of lengths) {
        if (!/^[0-9]+$/.test(item)) return failure(400, 'bad Content-Length');
        const d = item.replace(/^0+(?=.)/, '');
        if (digits !== '' && d !== digits) return failure(400, 'bad Content-Length');
        digits = d;
      }
      bodyLength = digits.length > 15 ? Number.POSITIVE_INFINITY : Number(digits);
      if (bodyLength > this.limits.maxBodyBytes)
        return failure(413, `request body over ${this.limits.maxBodyBytes} bytes`);
    }
    const close = http10 ? closeToken || !keepAliveToken : closeToken;
    return { method, target, close, headLength: to - from, bodyLength };
  }
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

/** Bytes as a string of char codes 0..255. */
function latin1(b: Uint8Array, from: number, to: number): string {
  let s = '';
  for (let i = from; i < to; i++) s += String.fromCharCode(b[i]);
  return s;
}

/** The comma-separated items of a header value, trimmed (empty items kept). */
function listItems(b: Uint8Array, from: number, to: number): string[] {
  const items: string[] = [];
  let s = from;
  for (let i = from; i <= to; i++) {
    if (i < to && b[i] !== COMMA) continue;
    let a = s;
    let e = i;
    while (a < e && (b[a] === SP || b[a] === HTAB)) a++;
    while (e > a && (b[e - 1] === SP || b[e - 1] === HTAB)) e--;
    items.push(latin1(b, a, e));
    s = i + 1;
  }
  return items;
}

/** HTTP/1.1 as a VM's wire protocol: each request is `[method, target, body]`. */
export const HTTP_PROTOCOL: WireProtocol = {
  name: 'http',
  framer: () => new HttpFramer(),
};
