// Reused buffers for page frames. A migration moves gigabytes through frames of 1 MiB;
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

/** Free read chunks kept per size. */
const MAX_FREE_CHUNKS = 16;

/** A reader's chunk holds this many reads: a frame that spans two chunks is copied. */
const READS_PER_CHUNK = 8;

export class FramePool {
  readonly #free: ArrayBuffer[] = [];
  /** The free list as a set: a frame given back twice is kept once, at no scan per frame. */
  readonly #isFree = new Set<ArrayBuffer>();
  readonly #mine = new WeakSet<ArrayBuffer>();
  /** Frames held in each read chunk (a chunk nothing holds is gone with its last view). */
  readonly #chunkHolds = new WeakMap<ArrayBuffer, number>();
  /** Chunks a reader is filling. */
  readonly #reading = new WeakSet<ArrayBuffer>();
  readonly #freeChunks = new Map<number, ArrayBuffer[]>();
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
   * control messages and demand answers are a few kilobytes, and a pooled buffer would
   * waste most of itself (a push frame, an eighth of one, is worth its reuse).
   */
  take(bytes: number): Buffer {
    if (bytes > this.capacity || bytes < this.capacity / 16) return Buffer.allocUnsafeSlow(bytes);
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
   * buffers this pool did not make. The caller must hold no other view of it; for a frame
   * held in a read chunk, no other view of that frame.
   */
  give(view: Uint8Array | undefined): void {
    const ab = view?.buffer;
    if (!ab || !(ab instanceof ArrayBuffer)) return;
    const held = this.#chunkHolds.get(ab);
    if (held !== undefined) {
      if (held <= 0) return; // given back twice
      this.#chunkHolds.set(ab, held - 1);
      if (held === 1 && !this.#reading.has(ab)) this.#freeChunk(ab);
      return;
    }
    if (!this.#mine.has(ab)) return;
    if (this.#free.length < this.maxFree && !this.#isFree.has(ab)) {
      this.#free.push(ab);
      this.#isFree.add(ab);
    }
  }

  /** A reader whose reads of up to `readBytes` land in this pool's chunks. */
  reader(readBytes: number): ChunkReader {
    return new ChunkReader(this, readBytes);
  }

  /** Chunks free for the next reader (for tests). */
  get freeChunks(): number {
    let n = 0;
    for (const list of this.#freeChunks.values()) n += list.length;
    return n;
  }

  /** @internal A chunk of `bytes` for a reader to fill. */
  takeChunk(bytes: number): ArrayBuffer {
    const ab = this.#freeChunks.get(bytes)?.pop() ?? new ArrayBuffer(bytes);
    this.#chunkHolds.set(ab, 0);
    this.#reading.add(ab);
    return ab;
  }

  /** @internal The reader moved on: the chunk is free once no frame holds it. */
  retireChunk(ab: ArrayBuffer): void {
    this.#reading.delete(ab);
    if (this.#chunkHolds.get(ab) === 0) this.#freeChunk(ab);
  }

  /** @internal A frame stays where it landed, in `ab`, until given back. */
  holdChunk(ab: ArrayBufferLike): void {
    const held = ab instanceof ArrayBuffer ? this.#chunkHolds.get(ab) : undefined;
    if (held !== undefined) this.#chunkHolds.set(ab as ArrayBuffer, held + 1);
  }

  #freeChunk(ab: ArrayBuffer): void {
    const list = this.#freeChunks.get(ab.byteLength) ?? [];
    if (list.length >= MAX_FREE_CHUNKS || list.includes(ab)) return;
    list.push(ab);
    this.#freeChunks.set(ab.byteLength, list);
  }

  get free(): number {
    return this.#free.length;
  }
}

/**
 * Where a socket's reads land (Node's `onread` buffer, asked for before each read): the
 * free end of a chunk of the pool's memory, read after read, so a frame stays where it
 * landed even across reads (back to back in the chunk) and its pages are copied once, into
 * guest RAM, not first out of a read buffer. The lane `hold`s each frame it keeps in place
 * and says where a frame is half read (`settled`); a chunk is reused once the reader has
 * moved on, no half-read frame lies in it and every frame held in it was given back
 * (`FramePool#give`). One a lane drops is left to the garbage collector.
 */
export class ChunkReader {
  #chunk: ArrayBuffer;
  #filled = 0;
  /** Chunks moved on from while a frame may still be half read in them. */
  #leaving: ArrayBuffer[] = [];

  constructor(
    private readonly pool: FramePool,
    readonly readBytes: number,
  ) {
    this.#chunk = pool.takeChunk(readBytes * READS_PER_CHUNK);
  }

  /** Where the next read lands: up to `readBytes`, after what the last reads left. */
  next(): Buffer {
    if (this.#chunk.byteLength - this.#filled < this.readBytes) {
      this.#leaving.push(this.#chunk);
      this.#chunk = this.pool.takeChunk(this.readBytes * READS_PER_CHUNK);
      this.#filled = 0;
    }
    return Buffer.from(this.#chunk, this.#filled, this.readBytes);
  }

  /** The read into the last `next()` brought `n` bytes: they stay. */
  landed(n: number): void {
    this.#filled += n;
  }

  /** `view`, read by this reader, is kept where it landed until given back to the pool. */
  hold(view: Uint8Array): void {
    this.pool.holdChunk(view.buffer);
  }

  /**
   * The frame half read now lies in `halfRead` (the decoder's views of it): the chunks moved
   * on from that it does not reach are the pool's once nothing holds them.
   */
  settled(halfRead: readonly Uint8Array[] = []): void {
    if (this.#leaving.length === 0) return;
    const reached = (ab: ArrayBuffer) => halfRead.some((v) => v.buffer === ab);
    this.#leaving = this.#leaving.filter((ab) => {
      if (reached(ab)) return true;
      this.pool.retireChunk(ab);
      return false;
    });
  }
}

/**
 * Pages per bulk frame before the switchover (precopy rounds, the stop-and-copy): no guest
 * waits on a page then, and each frame costs both hosts a fixed amount of work (a write, a
 * read, a turn of each event loop). A round of 1 GiB on loopback, side by side on the
 * reference machine: 1.59–2.39 GB/s with 256 pages a frame against 1.01–1.70 with 32.
 */
export const BATCH_PAGES = 256;

/**
 * Pages per frame of the postcopy push, while the guest runs on the destination and its
 * demands cross the same hosts: frames of 1 MiB raised the faults' p99 past a millisecond
 * (likely: on loopback the kernel delivers a write's segments in the writer's context, time
 * in which no fault thread runs on that core); 32 pages a frame keep it at a few hundred
 * microseconds.
 */
export const PUSH_BATCH_PAGES = 32;

/** Bytes of free frames the process's pool keeps. */
const POOL_BYTES = 32 * 2 ** 20;

/**
 * The process's pool: frames of up to BATCH_PAGES pages in up to BATCH_PAGES runs, a
 * push frame taking one too; 32 MiB of free buffers cover a bulk lane's socket queue and
 * the destination's backlog.
 */
const FRAME_CAPACITY = frameCapacity(BATCH_PAGES, BATCH_PAGES);
export const framePool = new FramePool(FRAME_CAPACITY, Math.ceil(POOL_BYTES / FRAME_CAPACITY));
