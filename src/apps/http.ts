// The guest's HTTP app: serves fixed objects and counters whose whole state lives in guest
// RAM, reached only through `GuestAccess`, for `wrk` and `curl` (requests come framed by
// HTTP_PROTOCOL as `[method, target, body]`).
//
// `execute(args)` serves one request and returns a complete HTTP/1.1 response. Nothing
// mutable is kept in JS between calls (an `HttpServer` caches only the region's immutable
// geometry), so any number of servers opened on the same RAM see the same counters, and a
// request interrupted by an exception from any access can be re-run from the start once
// the caller has discarded the interrupted run's writes.
//
// Routes (a query string is ignored; an absolute-form target counts by its path):
//   GET|HEAD /          a text index: object count and sizes, counter count
//   GET|HEAD /obj/<i>   object i (application/octet-stream)
//   GET|POST /hit/<k>   adds one to counter k (and to the hits total); its new value as text
//   GET|HEAD /stats     {"requests":..,"hits":..,"objects":..} (this request included)
//   another path: 404; an index out of range or not in plain decimal: 404; another method
//   on a route: 405 with `Allow`. Every request, whatever its answer, adds one to the
//   requests counter in the header page. Counters are u32 and wrap.
// A response to HEAD has no body, whatever its status (a 200 one has the GET response's
// headers).
//
// Layout of the region (offsets relative to its base, integers u32 little-endian):
//
//   header, one page (4096 bytes)
//     0   magic 0x31544846 ('FHT1')
//     4   version (1)
//     8   bytes used by the app (header through the counter table)
//     12  object count
//     16  counter count
//     20  object table offset (4096)
//     24  object bytes offset (the table's end, page-aligned)
//     28  counter table offset (the objects' end, page-aligned)
//     32  requests served
//     36  hits: increments of all counters
//     40  reserved (zero) up to 4096
//   object table: per object 8 bytes, its offset and its length
//   object bytes: the objects one after another
//   counter table: one u32 per counter, on pages of their own (objects are never written)
//
// Object sizes cycle through HTTP_OBJECT_MIX by index: i % 8 in 0..3 is 1 KiB, 4..5 is
// 4 KiB, 6 is 16 KiB, 7 is 64 KiB (92 KiB per 8 objects; 256 objects take 2.875 MiB).
// Object i holds a xorshift32 stream seeded from i (httpObjectContent), so a page lost or
// stale in a migration shows in the bytes served. When the region cannot hold the objects
// asked for, format() lays out as many as fit (the object count is in the header and in
// /stats); when it cannot hold one, it throws.

import type { GuestAccess } from '../guest/access.ts';
import { encodeResponse, textResponse } from './http-protocol.ts';

export const HTTP_MAGIC = 0x31544846;
export const HTTP_LAYOUT_VERSION = 1;

const PAGE = 4096;
const H_MAGIC = 0;
const H_VERSION = 4;
const H_USED = 8;
const H_OBJECTS = 12;
const H_COUNTERS = 16;
const H_TABLE = 20;
const H_DATA = 24;
const H_COUNTER_TABLE = 28;
const H_REQUESTS = 32;
const H_HITS = 36;
/** Header bytes; also where the object table starts. */
export const HTTP_HEADER_BYTES = PAGE;
const TABLE_ENTRY = 8;
const MAX_REGION = 0xffff_f000;
const MAX_OBJECTS = 65536;
const MAX_COUNTERS = 1 << 20;

/** Object sizes by index modulo 8. */
export const HTTP_OBJECT_MIX: readonly number[] = [1024, 1024, 1024, 1024, 4096, 4096, 16384, 65536];
const MIX_BYTES = HTTP_OBJECT_MIX.reduce((a, b) => a + b, 0);

export interface HttpOptions {
  /** Objects to serve, 1..65536 (fewer when the region cannot hold them). */
  objects: number;
  /** Counters for /hit/<k>, 1..1048576. */
  counters: number;
}

export const HTTP_OPTIONS: HttpOptions = { objects: 256, counters: 1024 };

const LIMITS: Record<keyof HttpOptions, number> = { objects: MAX_OBJECTS, counters: MAX_COUNTERS };

/** Options merged over HTTP_OPTIONS and checked; an Error naming the bad option. */
export function httpOptions(options: Record<string, unknown>): HttpOptions {
  for (const name of Object.keys(options))
    if (!(name in LIMITS))
      throw new Error(`http app: unknown option '${name}' (known: ${Object.keys(LIMITS).join(', ')})`);
  const merged = { ...HTTP_OPTIONS, ...(options as Partial<HttpOptions>) };
  for (const name of Object.keys(LIMITS) as (keyof HttpOptions)[]) {
    const v = merged[name];
    if (!(Number.isInteger(v) && v >= 1 && v <= LIMITS[name]))
      throw new Error(
        `http app: option '${name}' must be a whole number from 1 to ${LIMITS[name]}, got ${v}`,
      );
  }
  return merged;
}

/** The size of object `i`. */
export function httpObjectSize(i: number): number {
  return HTTP_OBJECT_MIX[i % HTTP_OBJECT_MIX.length];
}

/** The bytes of object `i` (of `size` bytes, a multiple of 4): a xorshift32 stream seeded from i. */
export function httpObjectContent(i: number, size = httpObjectSize(i)): Uint8Array {
  const out = new Uint8Array(size);
  let x = (Math.imul(i + 1, 0x9e3779b1) ^ HTTP_MAGIC) >>> 0 || 1;
  for (let at = 0; at + 4 <= size; at += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[at] = x;
    out[at + 1] = x >>> 8;
    out[at + 2] = x >>> 16;
    out[at + 3] = x >>> 24;
  }
  return out;
}

/** Bytes of the first `n` objects. */
function objectBytes(n: number): number {
  let total = Math.floor(n / HTTP_OBJECT_MIX.length) * MIX_BYTES;
  for (let i = 0; i < n % HTTP_OBJECT_MIX.length; i++) total += HTTP_OBJECT_MIX[i];
  return total;
}

const pageUp = (n: number) => Math.ceil(n / PAGE) * PAGE;

interface Geometry {
  objects: number;
  counters: number;
  data: number;
  counterTable: number;
  used: number;
}

function geometry(objects: number, counters: number): Geometry {
  const data = HTTP_HEADER_BYTES + pageUp(objects * TABLE_ENTRY);
  const counterTable = pageUp(data + objectBytes(objects));
  return { objects, counters, data, counterTable, used: counterTable + counters * 4 };
}

/** Not an http region, an unsupported version, or a region too small. */
export class HttpFormatError extends Error {}

export interface HttpStats {
  requests: number;
  hits: number;
  objects: number;
}

/** The Content-Type objects are served with. */
export const HTTP_OBJECT_TYPE = 'application/octet-stream';
const OCTETS = HTTP_OBJECT_TYPE;
const JSON_TYPE = 'application/json';
const GET_HEAD = [['Allow', 'GET, HEAD']] as const;
const GET_POST = [['Allow', 'GET, POST']] as const;

/** Bytes as a string of char codes 0..255. */
function latin1(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return s;
}

/** The path of a request target: no query or fragment, absolute-form reduced to its path. */
function pathOf(target: string): string {
  let t = target;
  const scheme = /^https?:\/\/[^/?#]*/i.exec(t);
  if (scheme) t = t.slice(scheme[0].length) || '/';
  const cut = t.search(/[?#]/);
  return cut < 0 ? t : t.slice(0, cut);
}

/** A plain decimal index below `count` (no sign, no leading zero), else -1. */
function indexOf(s: string, count: number): number {
  if (!/^(0|[1-9][0-9]{0,9})$/.test(s)) return -1;
  const n = Number(s);
  return n < count ? n : -1;
}

export class HttpServer {
  private constructor(
    readonly mem: GuestAccess,
    private readonly geo: Geometry,
  ) {}

  /** Objects served (read from the header when opened; fixed by format). */
  get objects(): number {
    return this.geo.objects;
  }

  get counters(): number {
    return this.geo.counters;
  }

  /** Lays out the objects and zeroed counters in the region (all of `mem`) and opens it. */
  static format(mem: GuestAccess, options: HttpOptions): HttpServer {
    const { counters } = httpOptions({ ...options });
    const size = Math.min(mem.size, MAX_REGION);
    let n = options.objects;
    while (n > 0 && geometry(n, counters).used > size) n--;
    if (n === 0)
      throw new HttpFormatError(
        `http app: a region of ${size} bytes is too small for one object and counters=${counters} ` +
          `(needs ${geometry(1, counters).used} bytes)`,
      );
    const geo = geometry(n, counters);
    mem.write(0, new Uint8Array(HTTP_HEADER_BYTES));
    const table = new Uint8Array(geo.data - HTTP_HEADER_BYTES);
    const view = new DataView(table.buffer);
    let at = geo.data;
    for (let i = 0; i < n; i++) {
      const len = httpObjectSize(i);
      view.setUint32(i * TABLE_ENTRY, at, true);
      view.setUint32(i * TABLE_ENTRY + 4, len, true);
      mem.write(at, httpObjectContent(i, len));
      at += len;
    }
    mem.write(HTTP_HEADER_BYTES, table);
    const zeros = new Uint8Array(64 * 1024);
    for (let z = geo.counterTable; z < geo.used; z += zeros.length)
      mem.write(z, z + zeros.length <= geo.used ? zeros : zeros.subarray(0, geo.used - z));
    const w = (off: number, v: number) => mem.writeU32(off, v);
    w(H_VERSION, HTTP_LAYOUT_VERSION);
    w(H_USED, geo.used);
    w(H_OBJECTS, n);
    w(H_COUNTERS, counters);
    w(H_TABLE, HTTP_HEADER_BYTES);
    w(H_DATA, geo.data);
    w(H_COUNTER_TABLE, geo.counterTable);
    w(H_MAGIC, HTTP_MAGIC);
    return new HttpServer(mem, geo);
  }

  /**
   * Opens the region formatted in `mem`, reading only its header page; the layout comes from
   * RAM, so `options` are not needed. HttpFormatError if there is none or it is inconsistent.
   */
  static open(mem: GuestAccess, _options?: Partial<HttpOptions>): HttpServer {
    if (mem.size < HTTP_HEADER_BYTES)
      throw new HttpFormatError(`no http region: guest RAM has only ${mem.size} bytes`);
    const r = (off: number) => mem.readU32(off);
    const magic = r(H_MAGIC);
    if (magic !== HTTP_MAGIC)
      throw new HttpFormatError(
        `not an http region: magic is 0x${magic.toString(16).padStart(8, '0')}, expected 0x${HTTP_MAGIC.toString(16)} ('FHT1')`,
      );
    const version = r(H_VERSION);
    if (version !== HTTP_LAYOUT_VERSION)
      throw new HttpFormatError(
        `http region has version ${version}; this build reads version ${HTTP_LAYOUT_VERSION}`,
      );
    const objects = r(H_OBJECTS);
    const counters = r(H_COUNTERS);
    const bad = (what: string) => new HttpFormatError(`http region has an inconsistent header: ${what}`);
    if (!(objects >= 1 && objects <= MAX_OBJECTS)) throw bad(`object count ${objects}`);
    if (!(counters >= 1 && counters <= MAX_COUNTERS)) throw bad(`counter count ${counters}`);
    const geo = geometry(objects, counters);
    if (r(H_TABLE) !== HTTP_HEADER_BYTES) throw bad(`object table offset ${r(H_TABLE)}`);
    if (r(H_DATA) !== geo.data) throw bad(`object bytes offset ${r(H_DATA)}`);
    if (r(H_COUNTER_TABLE) !== geo.counterTable) throw bad(`counter table offset ${r(H_COUNTER_TABLE)}`);
    if (r(H_USED) !== geo.used) throw bad(`used bytes ${r(H_USED)}`);
    if (geo.used > mem.size) throw bad(`${geo.used} bytes used do not fit in guest RAM of ${mem.size} bytes`);
    return new HttpServer(mem, geo);
  }

  /** Serves one request `[method, target, body]`; a complete HTTP/1.1 response. */
  execute(args: Uint8Array[]): Uint8Array {
    const mem = this.mem;
    mem.writeU32(H_REQUESTS, mem.readU32(H_REQUESTS) + 1);
    if (args.length !== 3) return textResponse(400, 'expected a method, a target and a body');
    const method = latin1(args[0]);
    const path = pathOf(latin1(args[1]));
    // a response to HEAD never has a body, whatever its status
    const omitBody = method === 'HEAD';
    const readable = method === 'GET' || omitBody;
    const text = (status: number, message: string, headers?: readonly (readonly [string, string])[]) =>
      textResponse(status, message, { headers, omitBody });
    if (path === '/') {
      if (!readable) return text(405, 'method not allowed', GET_HEAD);
      return encodeResponse(200, this.index(), { omitBody });
    }
    if (path === '/stats') {
      if (!readable) return text(405, 'method not allowed', GET_HEAD);
      const s = this.stats();
      const json = `{"requests":${s.requests},"hits":${s.hits},"objects":${s.objects}}\n`;
      return encodeResponse(200, json, { contentType: JSON_TYPE, omitBody });
    }
    if (path.startsWith('/obj/')) {
      const i = indexOf(path.slice(5), this.geo.objects);
      if (i < 0) return text(404, 'no such object');
      if (!readable) return text(405, 'method not allowed', GET_HEAD);
      const at = HTTP_HEADER_BYTES + i * TABLE_ENTRY;
      const offset = mem.readU32(at);
      const length = mem.readU32(at + 4);
      const body = omitBody ? new Uint8Array(length) : mem.read(offset, length);
      return encodeResponse(200, body, { contentType: OCTETS, omitBody });
    }
    if (path.startsWith('/hit/')) {
      const k = indexOf(path.slice(5), this.geo.counters);
      if (k < 0) return text(404, 'no such counter');
      if (method !== 'GET' && method !== 'POST') return text(405, 'method not allowed', GET_POST);
      const at = this.geo.counterTable + 4 * k;
      const value = (mem.readU32(at) + 1) >>> 0;
      mem.writeU32(at, value);
      mem.writeU32(H_HITS, mem.readU32(H_HITS) + 1);
      return text(200, String(value));
    }
    return text(404, 'not found');
  }

  /** Requests served, counter increments, objects (read from the header page). */
  stats(): HttpStats {
    return {
      requests: this.mem.readU32(H_REQUESTS),
      hits: this.mem.readU32(H_HITS),
      objects: this.mem.readU32(H_OBJECTS),
    };
  }

  /** The value of counter k (read from RAM). */
  counter(k: number): number {
    if (!(Number.isInteger(k) && k >= 0 && k < this.geo.counters))
      throw new RangeError(`counter ${k} out of 0..${this.geo.counters - 1}`);
    return this.mem.readU32(this.geo.counterTable + 4 * k);
  }

  /** The text index: objects with their sizes (from the object table), counters, routes. */
  private index(): string {
    const n = this.geo.objects;
    const bytes = this.mem.read(HTTP_HEADER_BYTES, n * TABLE_ENTRY);
    const table = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const bySize = new Map<number, number>();
    let total = 0;
    for (let i = 0; i < n; i++) {
      const len = table.getUint32(i * TABLE_ENTRY + 4, true);
      bySize.set(len, (bySize.get(len) ?? 0) + 1);
      total += len;
    }
    const sizes = [...bySize].sort((a, b) => a[0] - b[0]);
    return [
      'ferry http guest app',
      `objects: ${n} (${total} bytes) at /obj/0 .. /obj/${n - 1}`,
      ...sizes.map(([len, count]) => `  ${count} of ${len} bytes`),
      `counters: ${this.geo.counters} at /hit/0 .. /hit/${this.geo.counters - 1} (GET or POST)`,
      'stats: /stats',
      '',
    ].join('\n');
  }
}
