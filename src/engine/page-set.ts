// A set of page frame numbers sized for whole guests: millions of pages per VM and
// thousands of VMs per simulation. It starts as a short list of page runs, which is what
// sweeps, scan-order sends and untouched RAM look like, and switches for good to chunked
// bitmaps once the pattern fragments (random writes, scattered faults). Either way an
// untouched region costs nothing.

import { ChunkBitmap } from './chunk-bitmap.ts';
import { RunList } from './run-list.ts';

const MAX_CAPACITY = 2 ** 32;
/** Beyond this many runs the set turns into bitmaps. */
const MAX_RUNS = 64;

export class PageSet {
  readonly capacity: number;
  private list: RunList | undefined = new RunList();
  private map: ChunkBitmap | undefined;

  /** `start`: `bitmap` for sets known to fragment from the outset (a real guest's dirty log). */
  constructor(capacity: number, start: 'runs' | 'bitmap' = 'runs') {
    // pfns are handled as unsigned 32-bit integers (`>>>`), so 2^32 pages is the limit
    if (!Number.isInteger(capacity) || capacity < 0 || capacity > MAX_CAPACITY) {
      throw new RangeError(`page set capacity ${capacity}`);
    }
    this.capacity = capacity;
    if (start === 'bitmap') this.toBitmap();
  }

  get size(): number {
    return this.map ? this.map.size : this.list!.size;
  }

  /** `runs` while the set is a short run list, `bitmap` once it has fragmented. */
  get representation(): 'runs' | 'bitmap' {
    return this.map ? 'bitmap' : 'runs';
  }

  has(pfn: number): boolean {
    // the range check matters: pages past the capacity are never members
    if (!(pfn >>> 0 === pfn && pfn < this.capacity)) return false;
    return this.map ? this.map.has(pfn) : this.list!.has(pfn);
  }

  /** Adds one page; true when it was not there before. */
  add(pfn: number): boolean {
    this.check(pfn);
    if (this.map) return this.map.add(pfn);
    return this.addRange(pfn, pfn + 1) === 1;
  }

  /** Removes one page; true when it was there. */
  delete(pfn: number): boolean {
    if (!(pfn >>> 0 === pfn && pfn < this.capacity)) return false;
    if (this.map) return this.map.delete(pfn);
    return this.deleteRange(pfn, pfn + 1) === 1;
  }

  /** Adds pages [start, end) (clipped to the capacity); returns how many were new. */
  addRange(start: number, end: number): number {
    if (this.map) return this.map.addRange(start, end);
    start = Math.max(0, start);
    end = Math.min(this.capacity, end);
    if (!(start < end)) return 0;
    const n = this.list!.addRange(start, end);
    if (this.list!.runCount > MAX_RUNS) this.toBitmap();
    return n;
  }

  /** Removes pages [start, end) (clipped to the capacity); returns how many were removed. */
  deleteRange(start: number, end: number): number {
    if (this.map) return this.map.deleteRange(start, end);
    start = Math.max(0, start);
    end = Math.min(this.capacity, end);
    if (!(start < end)) return 0;
    const n = this.list!.deleteRange(start, end);
    if (this.list!.runCount > MAX_RUNS) this.toBitmap();
    return n;
  }

  /** Number of members in [start, end). */
  countRange(start: number, end: number): number {
    if (this.map) return this.map.countRange(start, end);
    start = Math.max(0, start);
    end = Math.min(this.capacity, end);
    return start < end ? this.list!.countRange(start, end) : 0;
  }

  /** Smallest member ≥ from, or -1. */
  next(from: number): number {
    if (this.map) return this.map.next(from);
    if (!(from >= 0)) from = 0;
    else if (from >= this.capacity) return -1;
    return this.list!.next(from);
  }

  /** Smallest non-member ≥ from (capacity when every page from there on is a member). */
  nextAbsent(from: number): number {
    if (this.map) return this.map.nextAbsent(from);
    if (!(from >= 0)) from = 0;
    else if (from >= this.capacity) return this.capacity;
    return this.list!.nextAbsent(from);
  }

  /**
   * Removes up to `max` members, scanning forward from `from` and wrapping around once,
   * and appends them as runs (`start, count` pairs) to `out`. Returns the number taken.
   */
  takeRuns(from: number, max: number, out: number[]): number {
    let taken = 0;
    let pos = from >= 0 && from < this.capacity ? from : 0;
    let wrapped = pos === 0;
    while (taken < max && this.size > 0) {
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
    if (this.map) this.map.clear();
    else this.list = new RunList();
  }

  /** Iterates members as runs [start, end). */
  *runs(): Generator<[number, number]> {
    if (this.list) {
      const r = this.list.r.slice();
      for (let i = 0; i < r.length; i += 2) yield [r[i], r[i + 1]];
      return;
    }
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
    return this.map ? this.map.footprintBytes() : 16 + this.list!.r.length * 8;
  }

  /** Partial chunks holding a bitmap (none while the set is a run list). */
  get bitmaps(): number {
    return this.map ? this.map.bitmaps : 0;
  }

  private check(pfn: number): void {
    if (!(pfn >>> 0 === pfn && pfn < this.capacity))
      throw new RangeError(`pfn ${pfn} outside 0..${this.capacity - 1}`);
  }

  private toBitmap(): void {
    const map = new ChunkBitmap(this.capacity);
    const r = this.list!.r;
    for (let i = 0; i < r.length; i += 2) map.addRange(r[i], r[i + 1]);
    this.map = map;
    this.list = undefined;
  }

  private merge(other: PageSet, set: boolean): void {
    if (other.capacity !== this.capacity) throw new RangeError('page sets of different capacity');
    if (other.list) {
      const r = other.list.r.slice(); // other may be this set
      for (let i = 0; i < r.length; i += 2) {
        if (set) this.addRange(r[i], r[i + 1]);
        else this.deleteRange(r[i], r[i + 1]);
      }
      return;
    }
    if (!this.map) this.toBitmap();
    this.map!.merge(other.map!, set);
  }
}
