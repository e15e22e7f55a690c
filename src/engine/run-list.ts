// The sparse representation of a page set: sorted, disjoint, non-touching runs of pages,
// stored flat as [start0, end0, start1, end1, …]. Every operation costs O(log runs +
// runs touched), whatever the size of the ranges: the shape of sets built from sweeps
// and scan-order sends (a handful of runs over gigabytes).

export class RunList {
  /** [start, end) pairs, sorted; end_i < start_{i+1} (adjacent runs are merged). */
  readonly r: number[] = [];
  size = 0;

  get runCount(): number {
    return this.r.length >>> 1;
  }

  /** Index of the first run whose end is > p (runCount when none). */
  private find(p: number): number {
    let lo = 0;
    let hi = this.r.length >>> 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.r[2 * mid + 1] <= p) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  has(p: number): boolean {
    const i = this.find(p);
    return i < this.r.length >>> 1 && this.r[2 * i] <= p;
  }

  /** Adds [s, e) (s < e); returns how many pages were new. */
  addRange(s: number, e: number): number {
    const r = this.r;
    const n = r.length >>> 1;
    const i = this.find(s - 1); // first run ending at or after s: it touches or overlaps
    let j = i;
    let lo = s;
    let hi = e;
    let present = 0;
    while (j < n && r[2 * j] <= e) {
      const a = r[2 * j];
      const b = r[2 * j + 1];
      present += Math.max(0, Math.min(b, e) - Math.max(a, s));
      if (a < lo) lo = a;
      if (b > hi) hi = b;
      j++;
    }
    const added = e - s - present;
    if (added === 0) return 0;
    if (j === i + 1) {
      r[2 * i] = lo;
      r[2 * i + 1] = hi;
    } else if (j === i) r.splice(2 * i, 0, lo, hi);
    else r.splice(2 * i, 2 * (j - i), lo, hi);
    this.size += added;
    return added;
  }

  /** Removes [s, e) (s < e); returns how many pages were removed. */
  deleteRange(s: number, e: number): number {
    const r = this.r;
    const n = r.length >>> 1;
    const i = this.find(s);
    let j = i;
    let removed = 0;
    while (j < n && r[2 * j] < e) {
      removed += Math.min(r[2 * j + 1], e) - Math.max(r[2 * j], s);
      j++;
    }
    if (removed === 0) return 0;
    const a = r[2 * i];
    const b = r[2 * (j - 1) + 1];
    // what survives of the first and last runs touched
    if (a < s && b > e) r.splice(2 * i, 2 * (j - i), a, s, e, b);
    else if (a < s) r.splice(2 * i, 2 * (j - i), a, s);
    else if (b > e) r.splice(2 * i, 2 * (j - i), e, b);
    else r.splice(2 * i, 2 * (j - i));
    this.size -= removed;
    return removed;
  }

  countRange(s: number, e: number): number {
    const r = this.r;
    const n = r.length >>> 1;
    let total = 0;
    for (let j = this.find(s); j < n && r[2 * j] < e; j++)
      total += Math.min(r[2 * j + 1], e) - Math.max(r[2 * j], s);
    return total;
  }

  /** Smallest member ≥ from, or -1. */
  next(from: number): number {
    const i = this.find(from);
    return i < this.r.length >>> 1 ? Math.max(from, this.r[2 * i]) : -1;
  }

  /** Smallest non-member ≥ from. */
  nextAbsent(from: number): number {
    const i = this.find(from);
    return i < this.r.length >>> 1 && this.r[2 * i] <= from ? this.r[2 * i + 1] : from;
  }
}
