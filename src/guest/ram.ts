// Guest RAM of a real VM: one SharedArrayBuffer of 4 KiB pages that every vCPU worker and
// the host's migration driver see, a presence word per page (a vCPU waits on it with
// Atomics when a page is still on its way) and a dirty bitmap cheap enough to leave on
// (a write tests its bit before setting it).

import { PAGE_SIZE } from '../engine/messages.ts';
import type { PageSet } from '../engine/page-set.ts';

/** What is shared with a vCPU worker: plain SharedArrayBuffers, no copies. */
export interface RamBuffers {
  data: SharedArrayBuffer;
  presence: SharedArrayBuffer;
  dirty: SharedArrayBuffer;
  /** [vCPUs waiting for a page]: installing pages wakes no one when it is 0. */
  waiters: SharedArrayBuffer;
}

export const PRESENT = 1;
export const MISSING = 0;
/**
 * A missing page one thread is copying in (postcopy, where a host's loop and its fault
 * thread both install pages): the others leave it to that thread and wait for PRESENT.
 */
export const INSTALLING = 2;

const ZERO_PAGE = new Uint8Array(PAGE_SIZE);

/**
 * Copies `source` into `target` at `offset` with one memcpy. V8 copies into or out of shared
 * memory with relaxed atomic accesses, a word at a time, and a byte at a time when the two
 * sides are aligned differently (as a frame's pages behind its header are): 2.9 GB/s on
 * the reference machine, against 10.6 for a memcpy, which is what Buffer#fill does with a
 * buffer exactly as long as the range. A page the guest writes meanwhile may be copied torn,
 * as with any copy; its write is logged.
 */
export function copyBytes(target: Buffer, offset: number, source: Uint8Array): void {
  if (source.length > 0) target.fill(source, offset, offset + source.length);
}

/** Largest guest RAM one buffer can hold with a whole-buffer view (DESIGN: 4 GiB). */
export const MAX_RAM_BYTES = 4 * 2 ** 30;

export class GuestRam {
  readonly pages: number;
  readonly bytes: Uint8Array;
  /** One Int32 per page: PRESENT or MISSING (Atomics.wait/notify on it). */
  readonly presence: Int32Array;
  /** One bit per page, 32 pages per word. */
  readonly dirty: Int32Array;
  private readonly waiters: Int32Array;
  /** The RAM as a Buffer: its compare is a native memcmp, 3× a JavaScript word loop. */
  private readonly buf: Buffer;

  constructor(readonly buffers: RamBuffers) {
    this.bytes = new Uint8Array(buffers.data);
    this.buf = Buffer.from(buffers.data);
    this.pages = this.bytes.byteLength / PAGE_SIZE;
    this.presence = new Int32Array(buffers.presence);
    this.dirty = new Int32Array(buffers.dirty);
    this.waiters = new Int32Array(buffers.waiters);
  }

  /**
   * New RAM of `bytes` (a multiple of 4 KiB); every page present, or every page missing.
   * `data`, when given, is the memory to use: all zeros, `bytes` long.
   */
  static create(bytes: number, present: boolean, data?: SharedArrayBuffer): GuestRam {
    if (!(Number.isInteger(bytes) && bytes > 0 && bytes % PAGE_SIZE === 0))
      throw new RangeError(`guest RAM of ${bytes} bytes: must be a positive multiple of 4096`);
    if (bytes > MAX_RAM_BYTES) throw new RangeError(`guest RAM of ${bytes} bytes: at most ${MAX_RAM_BYTES}`);
    const pages = bytes / PAGE_SIZE;
    if (data && data.byteLength !== bytes)
      throw new RangeError(`guest RAM of ${bytes} bytes given a buffer of ${data.byteLength}`);
    const ram = new GuestRam({
      data: data ?? new SharedArrayBuffer(bytes),
      presence: new SharedArrayBuffer(pages * 4),
      dirty: new SharedArrayBuffer(Math.ceil(pages / 32) * 4),
      waiters: new SharedArrayBuffer(4),
    });
    if (present) ram.presence.fill(PRESENT);
    return ram;
  }

  get size(): number {
    return this.bytes.byteLength;
  }

  isPresent(pfn: number): boolean {
    return Atomics.load(this.presence, pfn) === PRESENT;
  }

  /** Marks pages present and wakes every vCPU waiting on them. */
  markPresent(start: number, count: number): void {
    for (let p = start; p < start + count; p++) Atomics.store(this.presence, p, PRESENT);
    // a waiter registers before it checks presence, so it is seen here or sees the page
    if (Atomics.load(this.waiters, 0) > 0)
      for (let p = start; p < start + count; p++) Atomics.notify(this.presence, p);
  }

  /**
   * Takes `pfn` for an install: true when it was missing and is now this thread's to copy
   * in (then `markPresent`); false when it is present or another thread is installing it.
   */
  claim(pfn: number): boolean {
    return Atomics.compareExchange(this.presence, pfn, MISSING, INSTALLING) === MISSING;
  }

  /** Waits until no page is being installed (by another thread) any more. */
  settleInstalls(): void {
    for (let p = this.presence.indexOf(INSTALLING); p >= 0; p = this.presence.indexOf(INSTALLING, p))
      Atomics.wait(this.presence, p, INSTALLING, 1);
  }

  markMissing(start: number, count: number): void {
    for (let p = start; p < start + count; p++) Atomics.store(this.presence, p, MISSING);
  }

  /** Waits (blocking this thread) until `pfn` is present or `timeoutMs` passed; true when present. */
  waitPresent(pfn: number, timeoutMs = Number.POSITIVE_INFINITY): boolean {
    Atomics.add(this.waiters, 0, 1);
    try {
      for (let state = Atomics.load(this.presence, pfn); state !== PRESENT; ) {
        // missing, or being installed: either way markPresent wakes this wait
        if (Atomics.wait(this.presence, pfn, state, timeoutMs) === 'timed-out') return this.isPresent(pfn);
        state = Atomics.load(this.presence, pfn);
      }
      return true;
    } finally {
      Atomics.sub(this.waiters, 0, 1);
    }
  }

  /** Records a write to `pfn` in the dirty log (the bit is tested first: no atomic when set). */
  logWrite(pfn: number): void {
    const w = pfn >>> 5;
    const bit = 1 << (pfn & 31);
    // the test is an atomic load too: a plain read could see a bit the source just cleared
    if ((Atomics.load(this.dirty, w) & bit) === 0) Atomics.or(this.dirty, w, bit);
  }

  /** Moves the dirty log into `into` and clears it (a word at a time, atomically). */
  syncDirty(into: PageSet): number {
    let n = 0;
    for (let w = 0; w < this.dirty.length; w++) {
      if (Atomics.load(this.dirty, w) === 0) continue;
      let bits = Atomics.exchange(this.dirty, w, 0);
      while (bits !== 0) {
        const b = 31 - Math.clz32(bits & -bits);
        bits &= bits - 1;
        const pfn = (w << 5) + b;
        if (pfn < this.pages) {
          into.add(pfn);
          n++;
        }
      }
    }
    return n;
  }

  page(pfn: number): Uint8Array {
    return this.bytes.subarray(pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE);
  }

  isZeroPage(pfn: number): boolean {
    return this.buf.compare(ZERO_PAGE, 0, PAGE_SIZE, pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE) === 0;
  }

  /** Zero pages among [start, start + count). */
  zeroPagesIn(start: number, count: number): number {
    let n = 0;
    for (let p = start; p < start + count; p++) if (this.isZeroPage(p)) n++;
    return n;
  }
}
