// The dense representation of a page set: pages grouped in chunks of 4096; an empty or
// a full chunk costs no bitmap at all, so untouched (or wholly touched) regions are free
// and range operations on them are O(1) per chunk. Partial chunks keep a bitmap.

const CHUNK_SHIFT = 12;
const CHUNK = 1 << CHUNK_SHIFT; // pages per chunk
const WORDS = CHUNK >>> 5; // 32-bit words per chunk bitmap
const EMPTY_POOL = new Uint32Array(0);

/**
 * Chunk tables of small sets are carved out of shared slabs: one backing store for many
 * sets instead of one each, which matters with thousands of VMs (a slab is freed once
 * every set using it is gone).
 */
const SLAB_INTS = 1 << 16;
let slab = new Int32Array(SLAB_INTS);
let slabUsed = 0;

function fromSlab(ints: number): Int32Array {
  if (ints > SLAB_INTS / 8) return new Int32Array(ints);
  if (slabUsed + ints > SLAB_INTS) {
    slab = new Int32Array(SLAB_INTS);
    slabUsed = 0;
  }
  const t = slab.subarray(slabUsed, slabUsed + ints);
  slabUsed += ints;
  return t;
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** Mask of bits [lo, hi) in one 32-bit word (0 ≤ lo < hi ≤ 32). */
function bits(lo: number, hi: number): number {
  const upper = hi === 32 ? 0xffffffff : (1 << hi) - 1;
  return (upper & ~((1 << lo) - 1)) >>> 0;
}

export class ChunkBitmap {
  readonly capacity: number;
  /** Per chunk: [member count, bitmap slot or -1]; only partial chunks have a bitmap. */
  private readonly meta: Int32Array;
  /** Bitmaps of partial chunks, `WORDS` words per slot, in one growable arena. */
  private pool: Uint32Array = EMPTY_POOL;
  private readonly freeSlots: number[] = [];
  private slotsUsed = 0;
  private total = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
    const chunks = Math.ceil(capacity / CHUNK);
    this.meta = fromSlab(2 * chunks);
    for (let c = 0; c < chunks; c++) this.meta[2 * c + 1] = -1;
  }

  get size(): number {
    return this.total;
  }

  private get chunks(): number {
    return this.meta.length >>> 1;
  }

  private chunkLen(c: number): number {
    return Math.min(CHUNK, this.capacity - c * CHUNK);
  }

  /** Offset of chunk c's bitmap in the pool (the chunk must be partial). */
  private at(c: number): number {
    return this.meta[2 * c + 1] * WORDS;
  }

  has(pfn: number): boolean {
    // the range check matters: a full short last chunk would claim pages past the capacity
    if (!(pfn >>> 0 === pfn && pfn < this.capacity)) return false;
    const c = pfn >>> CHUNK_SHIFT;
    const n = this.meta[2 * c];
    if (n === 0) return false;
    if (n === this.chunkLen(c)) return true;
    const i = pfn & (CHUNK - 1);
    return ((this.pool[this.at(c) + (i >>> 5)] >>> (i & 31)) & 1) === 1;
  }

  /** Adds one page; true when it was not there before. */
  add(pfn: number): boolean {
    this.check(pfn);
    const c = pfn >>> CHUNK_SHIFT;
    const n = this.meta[2 * c];
    if (n === this.chunkLen(c)) return false;
    const w = this.bitmap(c) + ((pfn & (CHUNK - 1)) >>> 5);
    const bit = 1 << (pfn & 31);
    if (this.pool[w] & bit) return false;
    this.pool[w] |= bit;
    this.settle(c, n + 1);
    return true;
  }

  /** Removes one page; true when it was there. */
  delete(pfn: number): boolean {
    if (!(pfn >>> 0 === pfn && pfn < this.capacity)) return false;
    const c = pfn >>> CHUNK_SHIFT;
    const n = this.meta[2 * c];
    if (n === 0) return false;
    const w = this.bitmap(c) + ((pfn & (CHUNK - 1)) >>> 5);
    const bit = 1 << (pfn & 31);
    if (!(this.pool[w] & bit)) {
      this.settle(c, n); // a bitmap made for nothing goes back
      return false;
    }
    this.pool[w] &= ~bit;
    this.settle(c, n - 1);
    return true;
  }

  /** Adds pages [start, end) (clipped to the capacity); returns how many were new. */
  addRange(start: number, end: number): number {
    return this.rangeOp(start, end, true);
  }

  /** Removes pages [start, end); returns how many were removed. */
  deleteRange(start: number, end: number): number {
    return this.rangeOp(start, end, false);
  }

  /** Number of members in [start, end). */
  countRange(start: number, end: number): number {
    start = Math.max(0, start);
    end = Math.min(this.capacity, end);
    let n = 0;
    while (start < end) {
      const c = start >>> CHUNK_SHIFT;
      const cEnd = Math.min(end, (c + 1) * CHUNK);
      const cn = this.meta[2 * c];
      const whole = start === c * CHUNK && cEnd === start + this.chunkLen(c);
      if (whole || cn === this.chunkLen(c)) n += whole ? cn : cEnd - start;
      else if (cn !== 0) n += this.countBits(this.at(c), start - c * CHUNK, cEnd - c * CHUNK);
      start = cEnd;
    }
    return n;
  }

  /** Smallest member ≥ from, or -1. */
  next(from: number): number {
    if (!(from >= 0)) from = 0;
    else if (from >= this.capacity) return -1; // a full short last chunk would return `from`
    const chunks = this.chunks;
    const pool = this.pool;
    for (let c = from >>> CHUNK_SHIFT; c < chunks; c++) {
      const n = this.meta[2 * c];
      const base = c * CHUNK;
      if (n === 0) continue;
      const lo = Math.max(from - base, 0);
      if (n === this.chunkLen(c)) return base + lo;
      const off = this.at(c);
      for (let w = lo >>> 5; w < WORDS; w++) {
        let word = pool[off + w];
        if (w === lo >>> 5) word &= bits(lo & 31, 32);
        if (word !== 0) return base + (w << 5) + (31 - Math.clz32(word & -word));
      }
    }
    return -1;
  }

  /** Smallest non-member ≥ from (capacity when every page from there on is a member). */
  nextAbsent(from: number): number {
    if (!(from >= 0)) from = 0;
    else if (from >= this.capacity) return this.capacity;
    const chunks = this.chunks;
    const pool = this.pool;
    for (let c = from >>> CHUNK_SHIFT; c < chunks; c++) {
      const n = this.meta[2 * c];
      const base = c * CHUNK;
      const lo = Math.max(from - base, 0);
      if (n === 0) return base + lo;
      const len = this.chunkLen(c);
      if (n === len) continue;
      const off = this.at(c);
      for (let w = lo >>> 5; w < WORDS; w++) {
        let word = ~pool[off + w];
        if (w === lo >>> 5) word &= bits(lo & 31, 32);
        if (word !== 0) return Math.min(base + (w << 5) + (31 - Math.clz32(word & -word)), this.capacity);
      }
    }
    return this.capacity;
  }

  clear(): void {
    for (let c = 0; c < this.chunks; c++) {
      this.meta[2 * c] = 0;
      this.meta[2 * c + 1] = -1;
    }
    this.pool = EMPTY_POOL;
    this.freeSlots.length = 0;
    this.slotsUsed = 0;
    this.total = 0;
  }

  /** Bytes of memory the set holds (for footprint accounting). */
  footprintBytes(): number {
    return this.meta.byteLength + this.pool.byteLength;
  }

  /** Partial chunks, each holding a bitmap (for footprint accounting). */
  get bitmaps(): number {
    return this.slotsUsed - this.freeSlots.length;
  }

  private check(pfn: number): void {
    if (!(pfn >>> 0 === pfn && pfn < this.capacity))
      throw new RangeError(`pfn ${pfn} outside 0..${this.capacity - 1}`);
  }

  /** Pool offset of chunk c's bitmap, creating it (from the chunk's state) if needed. */
  private bitmap(c: number): number {
    const slot = this.meta[2 * c + 1];
    if (slot >= 0) return slot * WORDS;
    let s = this.freeSlots.pop();
    if (s === undefined) {
      s = this.slotsUsed++;
      if (this.slotsUsed * WORDS > this.pool.length) {
        // never more slots than chunks: a set with every chunk partial is one bit per page
        const grown = new Uint32Array(Math.min(this.chunks, Math.max(4, this.slotsUsed * 2)) * WORDS);
        grown.set(this.pool);
        this.pool = grown;
      }
    }
    this.meta[2 * c + 1] = s;
    const off = s * WORDS;
    if (this.meta[2 * c] === 0) this.pool.fill(0, off, off + WORDS);
    else {
      // a full chunk being split: set exactly its pages (the last chunk may be short)
      const len = this.chunkLen(c);
      this.pool.fill(0xffffffff, off, off + (len >>> 5));
      this.pool.fill(0, off + (len >>> 5), off + WORDS);
      if (len & 31) this.pool[off + (len >>> 5)] = bits(0, len & 31);
    }
    return off;
  }

  /** Records a chunk's new count and frees its bitmap when it became empty or full. */
  private settle(c: number, n: number): void {
    this.total += n - this.meta[2 * c];
    this.meta[2 * c] = n;
    if ((n === 0 || n === this.chunkLen(c)) && this.meta[2 * c + 1] >= 0) {
      this.freeSlots.push(this.meta[2 * c + 1]);
      this.meta[2 * c + 1] = -1;
      const live = this.slotsUsed - this.freeSlots.length;
      if (live === 0) {
        // no partial chunk left: give the arena back
        this.pool = EMPTY_POOL;
        this.freeSlots.length = 0;
        this.slotsUsed = 0;
      } else if (live * 4 <= this.pool.length / WORDS && this.pool.length > 4 * WORDS) this.compact(live);
    }
  }

  /** Moves the live bitmaps into a smaller arena. */
  private compact(live: number): void {
    const pool = new Uint32Array(Math.max(4, live * 2) * WORDS);
    let next = 0;
    for (let c = 0; c < this.chunks; c++) {
      const slot = this.meta[2 * c + 1];
      if (slot < 0) continue;
      pool.set(this.pool.subarray(slot * WORDS, (slot + 1) * WORDS), next * WORDS);
      this.meta[2 * c + 1] = next++;
    }
    this.pool = pool;
    this.slotsUsed = next;
    this.freeSlots.length = 0;
  }

  private countBits(off: number, lo: number, hi: number): number {
    let n = 0;
    for (let w = lo >>> 5; w <= (hi - 1) >>> 5; w++) {
      const a = w === lo >>> 5 ? lo & 31 : 0;
      const b = w === (hi - 1) >>> 5 ? ((hi - 1) & 31) + 1 : 32;
      n += popcount(this.pool[off + w] & bits(a, b));
    }
    return n;
  }

  private rangeOp(start: number, end: number, set: boolean): number {
    start = Math.max(0, start);
    end = Math.min(this.capacity, end);
    if (!(start < end)) return 0;
    const first = start >>> CHUNK_SHIFT;
    const last = (end - 1) >>> CHUNK_SHIFT;
    const lastEnd = last * CHUNK + this.chunkLen(last);
    let changed = 0;
    let from = first;
    let to = last;
    if (start !== first * CHUNK || (first === last && end !== lastEnd)) {
      changed += this.partialOp(first, start, Math.min(end, (first + 1) * CHUNK), set);
      from = first + 1;
    }
    if (from <= last && end !== lastEnd) {
      changed += this.partialOp(last, last * CHUNK, end, set);
      to = last - 1;
    }
    // whole chunks in the middle: counts only, no bitmaps (the hot loop for large ranges)
    const meta = this.meta;
    for (let c = from; c <= to; c++) {
      const n = meta[2 * c];
      const next = set ? (c === last ? this.chunkLen(c) : CHUNK) : 0;
      if (n === next) continue;
      changed += set ? next - n : n;
      this.settle(c, next);
    }
    return changed;
  }

  /** Sets or clears [start, end) inside chunk c (not the whole chunk). */
  private partialOp(c: number, start: number, end: number, set: boolean): number {
    const n = this.meta[2 * c];
    const len = this.chunkLen(c);
    if ((set && n === len) || (!set && n === 0)) return 0;
    const off = this.bitmap(c);
    const pool = this.pool;
    const base = c * CHUNK;
    const lo = start - base;
    const hi = end - base;
    let delta = 0;
    const wLo = lo >>> 5;
    const wHi = (hi - 1) >>> 5;
    for (let w = wLo; w <= wHi; w++) {
      const m = bits(w === wLo ? lo & 31 : 0, w === wHi ? ((hi - 1) & 31) + 1 : 32);
      const before = pool[off + w];
      const after = set ? (before | m) >>> 0 : (before & ~m) >>> 0;
      if (before !== after) {
        delta += popcount(after) - popcount(before);
        pool[off + w] = after;
      }
    }
    this.settle(c, n + delta);
    return Math.abs(delta);
  }

  merge(other: ChunkBitmap, set: boolean): void {
    if (other.capacity !== this.capacity) throw new RangeError('page sets of different capacity');
    for (let c = 0; c < this.chunks; c++) {
      const on = other.meta[2 * c];
      if (on === 0) continue;
      const base = c * CHUNK;
      const len = this.chunkLen(c);
      if (on === len) {
        this.rangeOp(base, base + len, set);
        continue;
      }
      const n = this.meta[2 * c];
      if ((set && n === len) || (!set && n === 0)) continue;
      const off = this.bitmap(c);
      const pool = this.pool;
      const oOff = other.at(c);
      const oPool = other.pool;
      let count = 0;
      for (let w = 0; w < WORDS; w++) {
        const v = set ? pool[off + w] | oPool[oOff + w] : pool[off + w] & ~oPool[oOff + w];
        pool[off + w] = v;
        count += popcount(v);
      }
      this.settle(c, count);
    }
  }
}
