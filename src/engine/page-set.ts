// A set of page frame numbers sized for whole guests: millions of pages per VM and
// thousands of VMs per simulation. Pages are grouped in chunks of 4096; an empty or a
// full chunk costs no bitmap at all, so untouched (or wholly touched) regions are free
// and range operations on them are O(1) per chunk.

const CHUNK_SHIFT = 12;
const CHUNK = 1 << CHUNK_SHIFT; // pages per chunk
const WORDS = CHUNK >>> 5; // 32-bit words per chunk bitmap
const MAX_CAPACITY = 2 ** 32;

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

export class PageSet {
  readonly capacity: number;
  private readonly counts: Uint16Array | Uint32Array;
  /** Bitmaps of partial chunks only; undefined for empty and full chunks. */
  private readonly maps: (Uint32Array | undefined)[];
  private total = 0;

  constructor(capacity: number) {
    // pfns are handled as unsigned 32-bit integers (`>>>`), so 2^32 pages is the limit
    if (!Number.isInteger(capacity) || capacity < 0 || capacity > MAX_CAPACITY) {
      throw new RangeError(`page set capacity ${capacity}`);
    }
    this.capacity = capacity;
    const chunks = Math.ceil(capacity / CHUNK);
    this.counts = new Uint32Array(chunks);
    this.maps = new Array(chunks).fill(undefined);
  }

  get size(): number {
    return this.total;
  }

  private chunkLen(c: number): number {
    return Math.min(CHUNK, this.capacity - c * CHUNK);
  }

  has(pfn: number): boolean {
    // the range check matters: a full short last chunk would claim pages past the capacity
    if (!(pfn >>> 0 === pfn && pfn < this.capacity)) return false;
    const c = pfn >>> CHUNK_SHIFT;
    const n = this.counts[c];
    if (n === 0) return false;
    if (n === this.chunkLen(c)) return true;
    const i = pfn & (CHUNK - 1);
    return ((this.maps[c]![i >>> 5] >>> (i & 31)) & 1) === 1;
  }

  /** Adds one page; true when it was not there before. */
  add(pfn: number): boolean {
    this.check(pfn);
    const c = pfn >>> CHUNK_SHIFT;
    const n = this.counts[c];
    const len = this.chunkLen(c);
    if (n === len) return false;
    const map = this.bitmap(c);
    const i = pfn & (CHUNK - 1);
    const bit = 1 << (i & 31);
    if (map[i >>> 5] & bit) return false;
    map[i >>> 5] |= bit;
    this.settle(c, n + 1);
    return true;
  }

  /** Removes one page; true when it was there. */
  delete(pfn: number): boolean {
    if (!(pfn >>> 0 === pfn && pfn < this.capacity)) return false;
    const c = pfn >>> CHUNK_SHIFT;
    const n = this.counts[c];
    if (n === 0) return false;
    const map = this.bitmap(c);
    const i = pfn & (CHUNK - 1);
    const bit = 1 << (i & 31);
    if (!(map[i >>> 5] & bit)) return false;
    map[i >>> 5] &= ~bit;
    this.settle(c, n - 1);
    return true;
  }

  /** Adds pages [start, end); returns how many were new. */
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
      const cn = this.counts[c];
      if (cn === this.chunkLen(c)) n += cEnd - start;
      else if (cn !== 0) n += this.countBits(this.maps[c]!, start - c * CHUNK, cEnd - c * CHUNK);
      start = cEnd;
    }
    return n;
  }

  /** Smallest member ≥ from, or -1. */
  next(from: number): number {
    if (!(from >= 0)) from = 0;
    else if (from >= this.capacity) return -1; // a full short last chunk would return `from`
    for (let c = from >>> CHUNK_SHIFT; c < this.counts.length; c++) {
      const n = this.counts[c];
      const base = c * CHUNK;
      if (n === 0) continue;
      const lo = Math.max(from - base, 0);
      if (n === this.chunkLen(c)) return base + lo;
      const map = this.maps[c]!;
      for (let w = lo >>> 5; w < WORDS; w++) {
        let word = map[w];
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
    for (let c = from >>> CHUNK_SHIFT; c < this.counts.length; c++) {
      const n = this.counts[c];
      const base = c * CHUNK;
      const lo = Math.max(from - base, 0);
      if (n === 0) return base + lo;
      const len = this.chunkLen(c);
      if (n === len) continue;
      const map = this.maps[c]!;
      for (let w = lo >>> 5; w < WORDS; w++) {
        let word = ~map[w];
        if (w === lo >>> 5) word &= bits(lo & 31, 32);
        if (word !== 0) return Math.min(base + (w << 5) + (31 - Math.clz32(word & -word)), this.capacity);
      }
    }
    return this.capacity;
  }

  /**
   * Removes up to `max` members, scanning forward from `from` and wrapping around once,
   * and appends them as runs (`start, count` pairs) to `out`. Returns the number taken.
   */
  takeRuns(from: number, max: number, out: number[]): number {
    let taken = 0;
    let pos = from >= 0 && from < this.capacity ? from : 0;
    let wrapped = pos === 0;
    while (taken < max && this.total > 0) {
      const s = this.next(pos);
      if (s < 0) {
        if (wrapped) break;
        wrapped = true;
        pos = 0;
        continue;
      }
      const e = Math.min(this.nextAbsent(s), s + (max - taken));
      this.deleteRange(s, e);
      out.push(s, e - s);
      taken += e - s;
      pos = e;
    }
    return taken;
  }

  /** Adds every member of `other` (same capacity). */
  addAll(other: PageSet): void {
    this.merge(other, true);
  }

  /** Removes every member of `other` (same capacity). */
  deleteAll(other: PageSet): void {
    this.merge(other, false);
  }

  clear(): void {
    this.counts.fill(0);
    this.maps.fill(undefined);
    this.total = 0;
  }

  /** Iterates members as runs [start, end). */
  *runs(): Generator<[number, number]> {
    let pos = 0;
    for (;;) {
      const s = this.next(pos);
      if (s < 0) return;
      const e = this.nextAbsent(s);
      yield [s, e];
      pos = e;
    }
  }

  /** Members as a flat `start, count` run list. */
  toRuns(): number[] {
    const out: number[] = [];
    for (const [s, e] of this.runs()) out.push(s, e - s);
    return out;
  }

  /** Bytes of memory the set holds (for footprint accounting). */
  footprintBytes(): number {
    let b = this.counts.byteLength + this.maps.length * 8;
    for (const m of this.maps) if (m) b += m.byteLength;
    return b;
  }

  private check(pfn: number): void {
    if (!(pfn >>> 0 === pfn && pfn < this.capacity))
      throw new RangeError(`pfn ${pfn} outside 0..${this.capacity - 1}`);
  }

  private bitmap(c: number): Uint32Array {
    let m = this.maps[c];
    if (m) return m;
    m = new Uint32Array(WORDS);
    if (this.counts[c] !== 0) {
      // a full chunk being split: set exactly its pages (the last chunk may be short)
      const len = this.chunkLen(c);
      m.fill(0xffffffff, 0, len >>> 5);
      if (len & 31) m[len >>> 5] = bits(0, len & 31);
    }
    this.maps[c] = m;
    return m;
  }

  /** Records a chunk's new count and drops its bitmap when it became empty or full. */
  private settle(c: number, n: number): void {
    this.total += n - this.counts[c];
    this.counts[c] = n;
    if (n === 0 || n === this.chunkLen(c)) this.maps[c] = undefined;
  }

  private countBits(map: Uint32Array, lo: number, hi: number): number {
    let n = 0;
    for (let w = lo >>> 5; w <= (hi - 1) >>> 5; w++) {
      const a = w === lo >>> 5 ? lo & 31 : 0;
      const b = w === (hi - 1) >>> 5 ? ((hi - 1) & 31) + 1 : 32;
      n += popcount(map[w] & bits(a, b));
    }
    return n;
  }

  private rangeOp(start: number, end: number, set: boolean): number {
    start = Math.max(0, start);
    end = Math.min(this.capacity, end);
    let changed = 0;
    while (start < end) {
      const c = start >>> CHUNK_SHIFT;
      const base = c * CHUNK;
      const len = this.chunkLen(c);
      const cEnd = Math.min(end, base + len);
      const n = this.counts[c];
      if (start === base && cEnd === base + len) {
        // whole chunk: no bitmap needed either way
        const next = set ? len : 0;
        changed += Math.abs(next - n);
        this.settle(c, next);
        this.maps[c] = undefined;
      } else if (!((set && n === len) || (!set && n === 0))) {
        const map = this.bitmap(c);
        const lo = start - base;
        const hi = cEnd - base;
        let delta = 0;
        for (let w = lo >>> 5; w <= (hi - 1) >>> 5; w++) {
          const a = w === lo >>> 5 ? lo & 31 : 0;
          const b = w === (hi - 1) >>> 5 ? ((hi - 1) & 31) + 1 : 32;
          const m = bits(a, b);
          const before = map[w];
          const after = set ? (before | m) >>> 0 : (before & ~m) >>> 0;
          delta += popcount(after) - popcount(before);
          map[w] = after;
        }
        changed += Math.abs(delta);
        this.settle(c, n + delta);
      }
      start = cEnd;
    }
    return changed;
  }

  private merge(other: PageSet, set: boolean): void {
    if (other.capacity !== this.capacity) throw new RangeError('page sets of different capacity');
    for (let c = 0; c < this.counts.length; c++) {
      const on = other.counts[c];
      if (on === 0) continue;
      const base = c * CHUNK;
      const len = this.chunkLen(c);
      if (on === len) {
        this.rangeOp(base, base + len, set);
        continue;
      }
      const n = this.counts[c];
      if ((set && n === len) || (!set && n === 0)) continue;
      const map = this.bitmap(c);
      const om = other.maps[c]!;
      let count = 0;
      for (let w = 0; w < WORDS; w++) {
        map[w] = set ? map[w] | om[w] : map[w] & ~om[w];
        count += popcount(map[w]);
      }
      this.settle(c, count);
    }
  }
}
