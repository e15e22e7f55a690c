// Reused buffers for page frames. A migration moves gigabytes through frames of 128 KiB;
// allocated anew, each counts as external memory to V8, which then runs a full
// collection every ~100 ms on both hosts (measured: 2–9 ms pauses, a few per second) —
// and a demand request that arrives during one waits it out. The source takes a frame
// here to fill and gives it back once the socket has written it; the destination's
// decoder gathers frames that span socket reads into one, given back once installed.

import { pagesFrameLayout } from '../engine/codec.ts';
import { PAGE_SIZE } from '../engine/messages.ts';

/** Room for a whole frame of `pages` pages, none of them zero, in `runs` runs. */
function frameCapacity(pages: number, runs: number): number {
  return pagesFrameLayout(runs, pages, pages * PAGE_SIZE).frameBytes;
}

export class FramePool {
  readonly #free: ArrayBuffer[] = [];
  /** The free list as a set: a frame given back twice is kept once, at no scan per frame. */
  readonly #isFree = new Set<ArrayBuffer>();
  readonly #mine = new WeakSet<ArrayBuffer>();
  /** Buffers handed out by `take` that came from the free list (for tests and benchmarks). */
  reused = 0;

  constructor(
    /** Bytes of every pooled buffer; bigger requests get a buffer of their own. */
    readonly capacity: number,
    /** Free buffers kept at most; more given back are left to the garbage collector. */
    readonly maxFree: number,
  ) {}

  /**
   * A buffer of exactly `bytes` bytes, contents undefined. Small ones are not pooled:
   * control messages are a few bytes, and a pooled buffer would waste most of itself.
   */
  take(bytes: number): Buffer {
    if (bytes > this.capacity || bytes < this.capacity / 4) return Buffer.allocUnsafeSlow(bytes);
    let ab = this.#free.pop();
    if (ab) {
      this.#isFree.delete(ab);
      this.reused++;
    } else {
      ab = new ArrayBuffer(this.capacity);
      this.#mine.add(ab);
    }
    return Buffer.from(ab, 0, bytes);
  }

  /**
   * Gives back the buffer under `view` (any view of it) for reuse; nothing is done for
   * buffers this pool did not make. The caller must hold no other view of it.
   */
  give(view: Uint8Array | undefined): void {
    const ab = view?.buffer;
    if (!ab || !(ab instanceof ArrayBuffer) || !this.#mine.has(ab)) return;
    if (this.#free.length < this.maxFree && !this.#isFree.has(ab)) {
      this.#free.push(ab);
      this.#isFree.add(ab);
    }
  }

  get free(): number {
    return this.#free.length;
  }
}

/**
 * Pages per bulk frame the source sends. The destination installs a frame in one go, and
 * a demand page arriving meanwhile waits: into guest RAM the host has never touched, a
 * page costs up to ~15 µs on a virtualised host (a 64-page frame held the event loop for
 * a millisecond, the median demand waited for most of one). Each frame also costs both
 * hosts a fixed amount of work: since pages are copied with memcpy, 32 pages a frame carry a
 * round of 1 GiB at 1.18–1.34 GB/s against 1.05–1.15 for 16, with the same fault latency
 * (side by side on the reference machine).
 */
export const BATCH_PAGES = 32;

/**
 * The process's pool: frames of up to BATCH_PAGES pages in up to BATCH_PAGES runs; 256
 * free buffers (32 MiB) cover a bulk lane's socket queue and the destination's backlog.
 */
export const framePool = new FramePool(frameCapacity(BATCH_PAGES, BATCH_PAGES), 256);
