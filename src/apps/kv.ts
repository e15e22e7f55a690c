// The guest's key-value app: a Redis-protocol store whose whole state lives in guest RAM,
// reached only through `GuestAccess`, so moving the RAM moves the store.
//
// `execute(args)` runs one command and returns its RESP reply. Nothing mutable is kept in
// JS between calls (a `KvStore` caches only the region's immutable geometry), so any
// number of `KvStore`s opened on the same RAM see the same data, and a command interrupted
// by `PageNotPresent` from any access can be re-run from the start once the caller has
// discarded the interrupted run's writes. A command that fails (out of memory, bad
// arguments) changes nothing in RAM.
//
// Layout of a store region (offsets relative to the region's base, integers u32
// little-endian, offset 0 means "none"):
//
//   header, 512 bytes
//     0   magic 0x31564b46 ('FKV1')
//     4   version (1)
//     8   region size in bytes (header + bucket table + heap)
//     12  bucket count (a power of two)
//     16  bucket table offset (512)
//     20  heap start (bucket table end, 8-aligned)
//     24  bump pointer: heap bytes beyond it were never allocated
//     28  key count
//     32  used bytes: total size of the blocks holding entries
//     36  reserved (zero) up to 64
//     64  free-list heads, one u32 per size class (64 slots; classes 1..56 are used)
//     320 reserved (zero) up to 512
//   bucket table at 512: one u32 per bucket, the first entry of its chain
//   heap: blocks from heap start up to the bump pointer, each the size of its class
//
//   block
//     +0  size class
//     +4  next: the next entry in the bucket's chain, or the next free block of the class
//     +8  hash of the key (FNV-1a, 32 bits); the bucket is hash & (bucket count - 1)
//     +12 key length
//     +16 value length
//     +20 key bytes, then value bytes; the rest of the block is slack
//
// Allocator: size classes 16·2^k and 24·2^k bytes (16, 24, 32, 48, 64, 96, ...), each with
// a free list; an allocation takes the head of its class's free list, else bumps the bump
// pointer, else takes a free block of a larger class (which keeps its class). A freed block
// goes back on its class's list. Blocks tile [heap start, bump) exactly, which `verify()`
// checks along with the chains, the free lists and the counters.
//
// The bucket count is fixed when the region is formatted (by default about one bucket per
// 128 bytes of region); chains grow if more keys are stored.

import type { GuestAccess } from '../guest/access.ts';
import {
  EMPTY_ARRAY,
  encodeArray,
  encodeBulk,
  encodeError,
  encodeInteger,
  encodeSimple,
  NIL_BULK,
  OK,
} from './resp.ts';

export const KV_MAGIC = 0x31564b46;
export const KV_VERSION = 1;

const H_MAGIC = 0;
const H_VERSION = 4;
const H_SIZE = 8;
const H_BUCKETS = 12;
const H_TABLE = 16;
const H_HEAP = 20;
const H_BUMP = 24;
const H_KEYS = 28;
const H_USED = 32;
const FREE_HEADS = 64;
const CLASS_SLOTS = 64;
/** Header bytes; also where the bucket table starts. */
export const KV_HEADER_BYTES = 512;
const TABLE = KV_HEADER_BYTES;

const B_CLASS = 0;
const B_NEXT = 4;
const B_HASH = 8;
const B_KLEN = 12;
const B_VLEN = 16;
/** Bytes of a block before its key. */
export const KV_ENTRY_OVERHEAD = 20;
const B_DATA = KV_ENTRY_OVERHEAD;
/** The smallest block an entry can take (class of an empty key and value). */
const MIN_BLOCK = 24;
const MAX_REGION = 0xffff_fff8;
const MAX_BUCKETS = 1 << 24;

/** Bytes in blocks of size class `c`: 16, 24, 32, 48, 64, 96, ... */
export function classSize(c: number): number {
  return (c & 1 ? 24 : 16) * 2 ** (c >> 1);
}

/** The smallest size class holding `bytes`. */
export function classOf(bytes: number): number {
  if (bytes <= 16) return 0;
  const p = 32 - Math.clz32(bytes - 1); // 2^(p-1) < bytes <= 2^p
  return bytes <= 3 * 2 ** (p - 2) ? 2 * p - 9 : 2 * p - 8;
}

/** FNV-1a, 32 bits. */
function hashKey(k: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < k.length; i++) h = Math.imul(h ^ k[i], 0x01000193);
  return h >>> 0;
}

function putU32(out: Uint8Array, at: number, v: number): void {
  out[at] = v;
  out[at + 1] = v >>> 8;
  out[at + 2] = v >>> 16;
  out[at + 3] = v >>> 24;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** `name` equals the lower-case ASCII word `lower`, ignoring case. */
function is(name: Uint8Array, lower: string): boolean {
  if (name.length !== lower.length) return false;
  for (let i = 0; i < name.length; i++) if ((name[i] | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

/** Bytes as a string of char codes 0..255 (so it converts back byte for byte). */
function latin1(b: Uint8Array, max = b.length): string {
  let s = '';
  const n = Math.min(b.length, Math.max(0, max));
  for (let i = 0; i < n; i++) s += String.fromCharCode(b[i]);
  return s;
}

function latin1Bytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function asciiDigits(n: number | bigint): Uint8Array {
  return latin1Bytes(String(n));
}

const I64_MAX = 9223372036854775807n;
const I64_MIN = -9223372036854775808n;

/** A strict signed 64-bit decimal, as Redis's string2ll: number when exact, else bigint; null if not. */
function parseI64(b: Uint8Array): number | bigint | null {
  const n = b.length;
  if (n === 0 || n > 20) return null;
  let i = 0;
  const negative = b[0] === 45;
  if (negative) {
    i = 1;
    if (n === 1) return null;
  }
  if (b[i] === 48) return n === 1 ? 0 : null;
  let v = 0;
  for (; i < n; i++) {
    const c = b[i];
    if (c < 48 || c > 57) return null;
    v = v * 10 + (c - 48);
  }
  if (n <= 15) return negative ? -v : v;
  const big = BigInt(latin1(b));
  return big > I64_MAX || big < I64_MIN ? null : big;
}

/** Redis-style glob match (`*`, `?`, `[a-z]`, `[^x]`, `\x`), case-insensitive, over ASCII. */
export function globMatch(pattern: Uint8Array, text: string): boolean {
  const lower = (c: number) => (c >= 65 && c <= 90 ? c | 0x20 : c);
  const one = (pi: number, c: number): number => {
    const p = pattern[pi];
    if (p === 63) return pi + 1; // ?
    if (p === 92 && pi + 1 < pattern.length) return lower(pattern[pi + 1]) === c ? pi + 2 : -1;
    if (p !== 91) return lower(p) === c ? pi + 1 : -1; // not [
    let i = pi + 1;
    const negate = pattern[i] === 94;
    if (negate) i++;
    let hit = false;
    while (i < pattern.length && pattern[i] !== 93) {
      if (pattern[i] === 92 && i + 1 < pattern.length) {
        if (lower(pattern[i + 1]) === c) hit = true;
        i += 2;
      } else if (i + 2 < pattern.length && pattern[i + 1] === 45 && pattern[i + 2] !== 93) {
        let a = lower(pattern[i]);
        let b = lower(pattern[i + 2]);
        if (a > b) [a, b] = [b, a];
        if (c >= a && c <= b) hit = true;
        i += 3;
      } else {
        if (lower(pattern[i]) === c) hit = true;
        i++;
      }
    }
    return hit !== negate ? Math.min(i + 1, pattern.length) : -1;
  };
  let pi = 0;
  let si = 0;
  let starP = -1;
  let starS = 0;
  while (si < text.length) {
    if (pi < pattern.length) {
      if (pattern[pi] === 42) {
        starP = pi++;
        starS = si;
        continue;
      }
      const next = one(pi, lower(text.charCodeAt(si)));
      if (next >= 0) {
        pi = next;
        si++;
        continue;
      }
    }
    if (starP < 0) return false;
    pi = starP + 1;
    si = ++starS;
  }
  while (pi < pattern.length && pattern[pi] === 42) pi++;
  return pi === pattern.length;
}

const OOM = encodeError("OOM command not allowed when used memory > 'maxmemory'.");
/** Bytes of the error a write gets when the store is full. */
export const KV_OOM_REPLY_BYTES = OOM.length;
const NOT_INTEGER = encodeError('ERR value is not an integer or out of range');
const OVERFLOW = encodeError('ERR increment or decrement would overflow');
const SYNTAX = encodeError('ERR syntax error');
const NO_EXPIRY = encodeError('ERR expiry options (EX, PX, EXAT, PXAT) are not supported');
const PONG = encodeSimple('PONG');

function wrongArity(name: string): Uint8Array {
  return encodeError(`ERR wrong number of arguments for '${name}' command`);
}

/** Redis's reply to an unknown command, byte for byte. */
function unknownCommand(args: Uint8Array[]): Uint8Array {
  let rest = '';
  for (let i = 1; i < args.length && rest.length < 128; i++)
    rest += `'${latin1(args[i], 128 - rest.length)}' `;
  const name = args.length > 0 ? latin1(args[0], 128) : '';
  return encodeError(latin1Bytes(`ERR unknown command '${name}', with args beginning with: ${rest}`));
}

/** Not a kv store, an unsupported version, or options that do not describe a valid region. */
export class KvFormatError extends Error {}
/** The store's structures in RAM are inconsistent. */
export class KvCorruptError extends Error {}

export interface KvFormatOptions {
  /** Guest address of the region (a multiple of 8); default 0. */
  base?: number;
  /** Region bytes; default the rest of guest RAM (at most 4 GiB - 8). */
  size?: number;
  /** Hash buckets, a power of two; default about one per 128 bytes of region. */
  buckets?: number;
}

export interface KvStats {
  keys: number;
  /** Bytes in blocks holding entries. */
  usedBytes: number;
  /** Heap bytes handed out so far by the bump pointer (live or free blocks). */
  bumpBytes: number;
  /** Heap size. */
  heapBytes: number;
  buckets: number;
}

export interface KvVerifyResult extends KvStats {
  freeBlocks: number;
  freeBytes: number;
  longestChain: number;
}

/** What MSET planned for a pair. */
const SKIP = -1;
const IN_PLACE = -2;

export class KvStore {
  private readonly heapStart: number;
  private readonly maxSteps: number;

  private constructor(
    readonly mem: GuestAccess,
    readonly base: number,
    readonly size: number,
    readonly buckets: number,
  ) {
    this.heapStart = heapStartFor(buckets);
    this.maxSteps = Math.floor((size - this.heapStart) / MIN_BLOCK) + 1;
  }

  /** Writes an empty store into the region and opens it. */
  static format(mem: GuestAccess, options: KvFormatOptions = {}): KvStore {
    const base = options.base ?? 0;
    if (!(Number.isSafeInteger(base) && base >= 0 && base % 8 === 0))
      throw new KvFormatError(`kv store base must be a non-negative multiple of 8, got ${base}`);
    const size = options.size ?? Math.floor(Math.min(mem.size - base, MAX_REGION) / 8) * 8;
    if (!(Number.isSafeInteger(size) && size > 0 && size <= MAX_REGION && size % 8 === 0))
      throw new KvFormatError(
        `kv store size must be a positive multiple of 8 up to ${MAX_REGION}, got ${size}`,
      );
    if (base + size > mem.size)
      throw new KvFormatError(
        `kv store of ${size} bytes at ${base} does not fit in guest RAM of ${mem.size} bytes`,
      );
    let buckets = options.buckets;
    if (buckets === undefined) {
      buckets = 16;
      while (buckets * 2 <= MAX_BUCKETS && buckets * 2 * 128 <= size) buckets *= 2;
    }
    if (
      !(
        Number.isSafeInteger(buckets) &&
        buckets >= 1 &&
        buckets <= MAX_BUCKETS &&
        (buckets & (buckets - 1)) === 0
      )
    )
      throw new KvFormatError(
        `kv store bucket count must be a power of two up to ${MAX_BUCKETS}, got ${buckets}`,
      );
    const heap = heapStartFor(buckets);
    if (heap + 64 > size)
      throw new KvFormatError(
        `kv store region of ${size} bytes is too small for ${buckets} buckets (needs at least ${heap + 64})`,
      );
    const zeros = new Uint8Array(Math.min(64 * 1024, heap));
    for (let at = 0; at < heap; at += zeros.length)
      mem.write(base + at, at + zeros.length <= heap ? zeros : zeros.subarray(0, heap - at));
    const w = (off: number, v: number) => mem.writeU32(base + off, v);
    w(H_VERSION, KV_VERSION);
    w(H_SIZE, size);
    w(H_BUCKETS, buckets);
    w(H_TABLE, TABLE);
    w(H_HEAP, heap);
    w(H_BUMP, heap);
    w(H_KEYS, 0);
    w(H_USED, 0);
    w(H_MAGIC, KV_MAGIC);
    return new KvStore(mem, base, size, buckets);
  }

  /** Opens the store formatted at `base`; KvFormatError if there is none or its header is inconsistent. */
  static open(mem: GuestAccess, base = 0): KvStore {
    if (!(Number.isSafeInteger(base) && base >= 0 && base % 8 === 0))
      throw new KvFormatError(`kv store base must be a non-negative multiple of 8, got ${base}`);
    if (base + KV_HEADER_BYTES > mem.size)
      throw new KvFormatError(`no kv store at ${base}: guest RAM has only ${mem.size} bytes`);
    const r = (off: number) => mem.readU32(base + off);
    const hex = (v: number) => `0x${v.toString(16).padStart(8, '0')}`;
    const magic = r(H_MAGIC);
    if (magic !== KV_MAGIC)
      throw new KvFormatError(
        `not a kv store: magic at guest address ${base} is ${hex(magic)}, expected ${hex(KV_MAGIC)} ('FKV1')`,
      );
    const version = r(H_VERSION);
    if (version !== KV_VERSION)
      throw new KvFormatError(
        `kv store at ${base} has version ${version}; this build reads version ${KV_VERSION}`,
      );
    const bad = (what: string) =>
      new KvFormatError(`kv store at ${base} has an inconsistent header: ${what}`);
    const size = r(H_SIZE);
    if (size % 8 !== 0 || size > MAX_REGION) throw bad(`region size ${size}`);
    if (base + size > mem.size)
      throw bad(`region of ${size} bytes does not fit in guest RAM of ${mem.size} bytes`);
    const buckets = r(H_BUCKETS);
    if (!(buckets >= 1 && buckets <= MAX_BUCKETS && (buckets & (buckets - 1)) === 0))
      throw bad(`bucket count ${buckets}`);
    if (r(H_TABLE) !== TABLE) throw bad(`bucket table offset ${r(H_TABLE)}`);
    const heap = heapStartFor(buckets);
    if (r(H_HEAP) !== heap || heap + 64 > size) throw bad(`heap start ${r(H_HEAP)}`);
    const bump = r(H_BUMP);
    if (bump < heap || bump > size || bump % 8 !== 0) throw bad(`bump pointer ${bump}`);
    const used = r(H_USED);
    if (used > bump - heap) throw bad(`used bytes ${used} beyond the ${bump - heap} allocated`);
    const keys = r(H_KEYS);
    if (keys * MIN_BLOCK > used) throw bad(`key count ${keys} for ${used} used bytes`);
    for (let c = 0; c < CLASS_SLOTS; c++) {
      const head = r(FREE_HEADS + 4 * c);
      if (head !== 0 && (head < heap || head >= bump || head % 8 !== 0))
        throw bad(`free list of class ${c} starts at ${head}`);
    }
    return new KvStore(mem, base, size, buckets);
  }

  /** Runs one command (arguments as the parser gives them); the RESP reply. Do not modify it. */
  execute(args: Uint8Array[]): Uint8Array {
    if (args.length === 0) return unknownCommand(args);
    const name = args[0];
    switch (name.length) {
      case 3:
        if (is(name, 'get')) return this.get(args);
        if (is(name, 'set')) return this.set(args);
        if (is(name, 'del')) return this.del(args);
        break;
      case 4:
        if (is(name, 'incr')) return this.incr(args);
        if (is(name, 'ping')) {
          if (args.length > 2) return wrongArity('ping');
          return args.length === 1 ? PONG : encodeBulk(args[1]);
        }
        if (is(name, 'echo')) return args.length === 2 ? encodeBulk(args[1]) : wrongArity('echo');
        if (is(name, 'mget')) return this.mget(args);
        if (is(name, 'mset')) return this.mset(args);
        break;
      case 6:
        if (is(name, 'exists')) return this.exists(args);
        if (is(name, 'dbsize'))
          return args.length === 1 ? encodeInteger(this.r(H_KEYS)) : wrongArity('dbsize');
        if (is(name, 'config')) return this.config(args);
        break;
      case 7:
        if (is(name, 'command')) return EMPTY_ARRAY;
        break;
    }
    return unknownCommand(args);
  }

  /** Counters from the header. */
  stats(): KvStats {
    return {
      keys: this.r(H_KEYS),
      usedBytes: this.r(H_USED),
      bumpBytes: this.r(H_BUMP) - this.heapStart,
      heapBytes: this.size - this.heapStart,
      buckets: this.buckets,
    };
  }

  /**
   * Walks every block, chain and free list and checks they agree: blocks tile the heap,
   * every block is either in exactly one chain (in the right bucket, with the right hash)
   * or on its class's free list, and the header's counters match. KvCorruptError if not.
   */
  verify(): KvVerifyResult {
    const fail = (what: string) => new KvCorruptError(`kv store at ${this.base}: ${what}`);
    const bump = this.r(H_BUMP);
    const blocks = new Map<number, number>(); // offset -> class
    for (let at = this.heapStart; at < bump; ) {
      const c = this.r(at + B_CLASS);
      if (c < 1 || c >= CLASS_SLOTS || at + classSize(c) > bump) throw fail(`block at ${at} has class ${c}`);
      blocks.set(at, c);
      at += classSize(c);
    }
    const seen = new Set<number>();
    let keys = 0;
    let used = 0;
    let longestChain = 0;
    for (let b = 0; b < this.buckets; b++) {
      let chain = 0;
      for (let e = this.r(TABLE + 4 * b); e !== 0; e = this.r(e + B_NEXT)) {
        const c = blocks.get(e);
        if (c === undefined) throw fail(`bucket ${b} links ${e}, which is not a block`);
        if (seen.has(e)) throw fail(`block ${e} is linked twice`);
        seen.add(e);
        const kl = this.r(e + B_KLEN);
        const vl = this.r(e + B_VLEN);
        if (B_DATA + kl + vl > classSize(c)) throw fail(`entry at ${e} overflows its block`);
        const key = this.mem.read(this.base + e + B_DATA, kl);
        const h = hashKey(key);
        if (this.r(e + B_HASH) !== h || (h & (this.buckets - 1)) !== b)
          throw fail(`entry at ${e} is in the wrong bucket`);
        keys++;
        used += classSize(c);
        chain++;
      }
      longestChain = Math.max(longestChain, chain);
    }
    let freeBlocks = 0;
    let freeBytes = 0;
    for (let c = 0; c < CLASS_SLOTS; c++) {
      for (let f = this.r(FREE_HEADS + 4 * c); f !== 0; f = this.r(f + B_NEXT)) {
        if (blocks.get(f) !== c) throw fail(`free list of class ${c} holds ${f}, not a block of that class`);
        if (seen.has(f)) throw fail(`block ${f} is both free and linked`);
        seen.add(f);
        freeBlocks++;
        freeBytes += classSize(c);
      }
    }
    if (seen.size !== blocks.size)
      throw fail(`${blocks.size - seen.size} blocks are neither linked nor free`);
    if (keys !== this.r(H_KEYS)) throw fail(`key count ${this.r(H_KEYS)}, found ${keys}`);
    if (used !== this.r(H_USED)) throw fail(`used bytes ${this.r(H_USED)}, found ${used}`);
    return { ...this.stats(), freeBlocks, freeBytes, longestChain };
  }

  // -------------------------------------------------------------------------------------
  // Commands

  private get(args: Uint8Array[]): Uint8Array {
    if (args.length !== 2) return wrongArity('get');
    const key = args[1];
    const link = this.findLink(key, hashKey(key));
    return link === 0 ? NIL_BULK : encodeBulk(this.valueAt(this.r(link), key.length));
  }

  private set(args: Uint8Array[]): Uint8Array {
    if (args.length < 3) return wrongArity('set');
    let nx = false;
    let xx = false;
    let get = false;
    for (let i = 3; i < args.length; i++) {
      const o = args[i];
      if (is(o, 'nx')) nx = true;
      else if (is(o, 'xx')) xx = true;
      else if (is(o, 'get')) get = true;
      else if (is(o, 'keepttl')) {
        // no key ever has a time to live
      } else if (is(o, 'ex') || is(o, 'px') || is(o, 'exat') || is(o, 'pxat')) return NO_EXPIRY;
      else return SYNTAX;
    }
    if (nx && xx) return SYNTAX;
    const key = args[1];
    const h = hashKey(key);
    const link = this.findLink(key, h);
    let reply = OK;
    if (get) reply = link === 0 ? NIL_BULK : encodeBulk(this.valueAt(this.r(link), key.length));
    if ((nx && link !== 0) || (xx && link === 0)) return get ? reply : NIL_BULK;
    return this.put(key, h, args[2], link) ? reply : OOM;
  }

  private del(args: Uint8Array[]): Uint8Array {
    if (args.length < 2) return wrongArity('del');
    let n = 0;
    for (let i = 1; i < args.length; i++) {
      const key = args[i];
      const link = this.findLink(key, hashKey(key));
      if (link === 0) continue;
      const e = this.r(link);
      this.w(link, this.r(e + B_NEXT));
      this.release(e);
      n++;
    }
    if (n > 0) this.w(H_KEYS, this.r(H_KEYS) - n);
    return encodeInteger(n);
  }

  private exists(args: Uint8Array[]): Uint8Array {
    if (args.length < 2) return wrongArity('exists');
    let n = 0;
    for (let i = 1; i < args.length; i++) if (this.findLink(args[i], hashKey(args[i])) !== 0) n++;
    return encodeInteger(n);
  }

  private incr(args: Uint8Array[]): Uint8Array {
    if (args.length !== 2) return wrongArity('incr');
    const key = args[1];
    const h = hashKey(key);
    const link = this.findLink(key, h);
    let n: number | bigint = 0;
    if (link !== 0) {
      const e = this.r(link);
      if (this.r(e + B_VLEN) > 20) return NOT_INTEGER;
      const v = parseI64(this.valueAt(e, key.length));
      if (v === null) return NOT_INTEGER;
      n = v;
    }
    let next: number | bigint;
    if (typeof n === 'number' && n < Number.MAX_SAFE_INTEGER) next = n + 1;
    else {
      next = BigInt(n) + 1n;
      if (next > I64_MAX) return OVERFLOW;
    }
    return this.put(key, h, asciiDigits(next), link) ? encodeInteger(next) : OOM;
  }

  private mget(args: Uint8Array[]): Uint8Array {
    if (args.length < 2) return wrongArity('mget');
    const items: Uint8Array[] = [];
    for (let i = 1; i < args.length; i++) {
      const key = args[i];
      const link = this.findLink(key, hashKey(key));
      items.push(link === 0 ? NIL_BULK : encodeBulk(this.valueAt(this.r(link), key.length)));
    }
    return encodeArray(items);
  }

  /** All pairs or none: blocks are reserved first, and released exactly as they were on OOM. */
  private mset(args: Uint8Array[]): Uint8Array {
    if (args.length < 3 || args.length % 2 === 0) return wrongArity('mset');
    const pairs = (args.length - 1) / 2;
    const plan = this.laterDuplicates(args, pairs);
    const bump = this.r(H_BUMP);
    const used = this.r(H_USED);
    for (let i = 0; i < pairs; i++) {
      if (plan[i] === SKIP) continue;
      const key = args[1 + 2 * i];
      const need = B_DATA + key.length + args[2 + 2 * i].length;
      const link = this.findLink(key, hashKey(key));
      if (link !== 0 && need <= classSize(this.r(this.r(link) + B_CLASS))) {
        plan[i] = IN_PLACE;
        continue;
      }
      const a = this.alloc(need);
      if (a < 0) {
        // Undo the reservations: push popped blocks back in reverse order, restore the counters.
        for (let j = i - 1; j >= 0; j--) {
          const p = plan[j];
          if (p < 0) continue;
          const block = Math.floor(p / CLASS_SLOTS);
          if (block < bump) this.w(FREE_HEADS + 4 * (p % CLASS_SLOTS), block);
        }
        this.w(H_BUMP, bump);
        this.w(H_USED, used);
        return OOM;
      }
      plan[i] = a;
    }
    let added = 0;
    for (let i = 0; i < pairs; i++) {
      const p = plan[i];
      if (p === SKIP) continue;
      const key = args[1 + 2 * i];
      const value = args[2 + 2 * i];
      const h = hashKey(key);
      const link = this.findLink(key, h);
      if (p === IN_PLACE) this.overwrite(this.r(link), key.length, value);
      else if (this.place(p, key, h, value, link)) added++;
    }
    if (added > 0) this.w(H_KEYS, this.r(H_KEYS) + added);
    return OK;
  }

  /** A plan with SKIP for every pair whose key appears again later (the last one wins), else 0. */
  private laterDuplicates(args: Uint8Array[], pairs: number): number[] {
    const plan = new Array<number>(pairs).fill(0);
    if (pairs === 1) return plan;
    if (pairs <= 64) {
      for (let i = 0; i < pairs; i++)
        for (let j = i + 1; j < pairs; j++)
          if (sameBytes(args[1 + 2 * i], args[1 + 2 * j])) {
            plan[i] = SKIP;
            break;
          }
      return plan;
    }
    const last = new Map<string, number>();
    for (let i = 0; i < pairs; i++) last.set(latin1(args[1 + 2 * i]), i);
    for (let i = 0; i < pairs; i++) if (last.get(latin1(args[1 + 2 * i])) !== i) plan[i] = SKIP;
    return plan;
  }

  private config(args: Uint8Array[]): Uint8Array {
    if (args.length < 2) return wrongArity('config');
    const sub = args[1];
    if (!is(sub, 'get'))
      return encodeError(latin1Bytes(`ERR unknown subcommand '${latin1(sub, 128)}'. Try CONFIG HELP.`));
    if (args.length < 3) return wrongArity('config|get');
    const params: [string, string][] = [
      ['save', ''],
      ['appendonly', 'no'],
      ['maxmemory', String(this.size - this.heapStart)],
    ];
    const items: Uint8Array[] = [];
    for (const [name, value] of params) {
      let hit = false;
      for (let i = 2; i < args.length && !hit; i++) hit = globMatch(args[i], name);
      if (hit) items.push(encodeBulk(name), encodeBulk(value));
    }
    return encodeArray(items);
  }

  // -------------------------------------------------------------------------------------
  // Entries

  private r(off: number): number {
    return this.mem.readU32(this.base + off);
  }

  private w(off: number, v: number): void {
    this.mem.writeU32(this.base + off, v);
  }

  private valueAt(e: number, keyLen: number): Uint8Array {
    return this.mem.read(this.base + e + B_DATA + keyLen, this.r(e + B_VLEN));
  }

  /**
   * The offset of the link (bucket slot, or a previous entry's next field) that points at
   * the entry for `key`, or 0 if the key is absent.
   */
  private findLink(key: Uint8Array, h: number): number {
    let link = TABLE + 4 * (h & (this.buckets - 1));
    for (let steps = 0; steps < this.maxSteps; steps++) {
      const e = this.r(link);
      if (e === 0) return 0;
      if (this.r(e + B_HASH) === h && this.r(e + B_KLEN) === key.length && this.keyIs(e, key)) return link;
      link = e + B_NEXT;
    }
    throw new KvCorruptError(
      `kv store at ${this.base}: the chain of bucket ${h & (this.buckets - 1)} does not end`,
    );
  }

  private keyIs(e: number, key: Uint8Array): boolean {
    return key.length === 0 || sameBytes(this.mem.read(this.base + e + B_DATA, key.length), key);
  }

  /** Stores `value` under `key` (its entry at `link`, or absent if 0); false when out of memory. */
  private put(key: Uint8Array, h: number, value: Uint8Array, link: number): boolean {
    const need = B_DATA + key.length + value.length;
    if (link !== 0) {
      const e = this.r(link);
      if (need <= classSize(this.r(e + B_CLASS))) {
        this.overwrite(e, key.length, value);
        return true;
      }
    }
    const a = this.alloc(need);
    if (a < 0) return false;
    if (this.place(a, key, h, value, link)) this.w(H_KEYS, this.r(H_KEYS) + 1);
    return true;
  }

  private overwrite(e: number, keyLen: number, value: Uint8Array): void {
    if (this.r(e + B_VLEN) !== value.length) this.w(e + B_VLEN, value.length);
    if (value.length > 0) this.mem.write(this.base + e + B_DATA + keyLen, value);
  }

  /**
   * Writes the entry into the allocated block `a` and links it in place of the entry at
   * `link` (which is freed) or at the head of its bucket; true if the key is new.
   */
  private place(a: number, key: Uint8Array, h: number, value: Uint8Array, link: number): boolean {
    const block = Math.floor(a / CLASS_SLOTS);
    const old = link === 0 ? 0 : this.r(link);
    if (old === 0) link = TABLE + 4 * (h & (this.buckets - 1));
    const bytes = new Uint8Array(B_DATA + key.length + value.length);
    putU32(bytes, B_CLASS, a % CLASS_SLOTS);
    putU32(bytes, B_NEXT, old === 0 ? this.r(link) : this.r(old + B_NEXT));
    putU32(bytes, B_HASH, h);
    putU32(bytes, B_KLEN, key.length);
    putU32(bytes, B_VLEN, value.length);
    bytes.set(key, B_DATA);
    bytes.set(value, B_DATA + key.length);
    this.mem.write(this.base + block, bytes);
    this.w(link, block);
    if (old === 0) return true;
    this.release(old);
    return false;
  }

  /**
   * Takes a block of at least `bytes`: block offset × 64 + its class, or -1 when out of
   * memory. Writes only the header's allocator fields (the caller writes the block).
   */
  private alloc(bytes: number): number {
    if (bytes > this.size - this.heapStart) return -1;
    const c = classOf(bytes);
    const take = (d: number, head: number) => {
      this.w(FREE_HEADS + 4 * d, this.r(head + B_NEXT));
      this.w(H_USED, this.r(H_USED) + classSize(d));
      return head * CLASS_SLOTS + d;
    };
    const head = this.r(FREE_HEADS + 4 * c);
    if (head !== 0) return take(c, head);
    const bump = this.r(H_BUMP);
    const size = classSize(c);
    if (bump + size <= this.size) {
      this.w(H_BUMP, bump + size);
      this.w(H_USED, this.r(H_USED) + size);
      return bump * CLASS_SLOTS + c;
    }
    for (let d = c + 1; d < CLASS_SLOTS && classSize(d) <= this.size; d++) {
      const h = this.r(FREE_HEADS + 4 * d);
      if (h !== 0) return take(d, h);
    }
    return -1;
  }

  private release(e: number): void {
    const c = this.r(e + B_CLASS);
    this.w(e + B_NEXT, this.r(FREE_HEADS + 4 * c));
    this.w(FREE_HEADS + 4 * c, e);
    this.w(H_USED, this.r(H_USED) - classSize(c));
  }
}

function heapStartFor(buckets: number): number {
  return (TABLE + 4 * buckets + 7) & ~7;
}
