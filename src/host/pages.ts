// Page contents on the wire: the source fills a batch from guest RAM (zero pages travel as
// a bit in the mask), the destination installs the pages the engine accepts, and both keep
// per-page checksums so the end of a migration can prove the RAM arrived intact.

import { Worker } from 'node:worker_threads';
import { pagesFrameLayout } from '../engine/codec.ts';
import type { PageBatch, SourceMessage } from '../engine/messages.ts';
import { PAGE_SIZE } from '../engine/messages.ts';
import { copyBytes, type GuestRam } from '../guest/ram.ts';
import { crc32 } from './crc32.ts';
import { framePool } from './frame-pool.ts';
import { pageCrcs } from './page-sums.ts';
import type { HashDone, HashJob } from './ram-hash-worker.ts';
import type { LaneConnection } from './transport.ts';

const ZERO_PAGE_CRC = crc32(new Uint8Array(PAGE_SIZE));

/**
 * Attaches the pages' contents (non-zero pages back to back) and the zero mask, building
 * the batch's frame around them so the codec does not copy the pages again.
 */
export function fillBatch(ram: GuestRam, batch: PageBatch): void {
  const mask = new Uint8Array(Math.ceil(batch.pageCount / 8));
  let i = 0;
  let zeros = 0;
  for (let r = 0; r < batch.runs.length; r += 2)
    for (let p = batch.runs[r]; p < batch.runs[r] + batch.runs[r + 1]; p++, i++)
      if (ram.isZeroPage(p)) {
        mask[i >> 3] |= 1 << (i & 7);
        zeros++;
      }
  const dataBytes = (batch.pageCount - zeros) * PAGE_SIZE;
  const layout = pagesFrameLayout(batch.runs.length / 2, batch.pageCount, dataBytes);
  const frame = framePool.take(layout.frameBytes); // given back once written
  const ramBuf = Buffer.from(ram.buffers.data);
  let off = layout.dataOffset;
  i = 0;
  // one copy per stretch of consecutive non-zero pages; a page written since the zero
  // check travels as it is now (its write is logged)
  for (let r = 0; r < batch.runs.length; r += 2) {
    const end = batch.runs[r] + batch.runs[r + 1];
    for (let p = batch.runs[r]; p < end; ) {
      if ((mask[i >> 3] >> (i & 7)) & 1) {
        p++;
        i++;
        continue;
      }
      const from = p;
      for (; p < end && !((mask[i >> 3] >> (i & 7)) & 1); p++, i++);
      copyBytes(frame, off, ramBuf.subarray(from * PAGE_SIZE, p * PAGE_SIZE));
      off += (p - from) * PAGE_SIZE;
    }
  }
  batch.zeroMask = mask;
  batch.zeroCount = zeros;
  batch.data = frame.subarray(layout.dataOffset, layout.dataOffset + dataBytes);
  batch.frame = frame;
}

/**
 * Answers a demand: pages `pfns` of `ram` on `lane` as one urgent batch, whose frame goes
 * back to the pool once written. Returns the batch (its zero count); throws what the lane's
 * send throws.
 */
export function sendUrgentPages(ram: GuestRam, lane: LaneConnection, pfns: number[]): PageBatch {
  const runs: number[] = [];
  for (const p of pfns) runs.push(p, 1);
  const batch: PageBatch = { kind: 'urgent', runs, pageCount: pfns.length, zeroCount: 0 };
  fillBatch(ram, batch);
  const frame = batch.frame!;
  lane.send({ type: 'pages', batch } satisfies SourceMessage, () => framePool.give(frame));
  return batch;
}

/**
 * Writes the pages of `batch` that fall in `install` (runs the destination engine accepted,
 * each within one run of the batch, in the batch's order)
 * into guest RAM, records their checksums and marks them present. `written`, when given,
 * marks the pages this migration has put data in, the others still holding the zeros of a
 * new VM's RAM: a zero page costs nothing there, not even a look (an idle VM is mostly
 * zero pages, and looking at fresh memory makes the host map it). With `claim` (postcopy,
 * where another thread installs too) only pages this call claims from missing are written.
 * Returns the runs installed.
 */
export function installBatch(
  ram: GuestRam,
  batch: PageBatch,
  install: number[],
  sums: Uint32Array,
  written?: Uint8Array,
  claim = false,
): number[] {
  if (!batch.data || !batch.zeroMask) throw new Error('pages frame without contents');
  const src = Buffer.from(batch.data.buffer, batch.data.byteOffset, batch.data.byteLength);
  const dst = Buffer.from(ram.buffers.data);
  // which pages of the batch to install: batch runs need not be in pfn order (the scan wraps)
  const want = new Uint8Array(batch.pageCount);
  for (let r = 0; r < install.length; r += 2) {
    let index = 0;
    for (let k = 0; k < batch.runs.length; k += 2) {
      const s = batch.runs[k];
      const n = batch.runs[k + 1];
      if (install[r] >= s && install[r] < s + n) {
        want.fill(1, index + install[r] - s, index + install[r] - s + install[r + 1]);
        break;
      }
      index += n;
    }
  }
  if (claim) {
    // postcopy with a fault thread: a page another thread has (or is installing) is its
    let i = 0;
    for (let k = 0; k < batch.runs.length; k += 2)
      for (let p = batch.runs[k]; p < batch.runs[k] + batch.runs[k + 1]; p++, i++)
        if (want[i] && !ram.claim(p)) want[i] = 0;
  }
  const mask = batch.zeroMask;
  const isZero = (i: number) => (mask[i >> 3] >> (i & 7)) & 1;
  // the lane checked the frame page by page: the pages' checksums are known already
  const known = pageCrcs(batch.data);
  let i = 0; // page index in the batch
  let off = 0; // offset in batch.data
  for (let k = 0; k < batch.runs.length; k += 2) {
    const end = batch.runs[k] + batch.runs[k + 1];
    for (let p = batch.runs[k]; p < end; ) {
      if (!want[i]) {
        if (!isZero(i)) off += PAGE_SIZE;
        p++;
        i++;
      } else if (isZero(i)) {
        if (written ? written[p] : !ram.isZeroPage(p)) ram.page(p).fill(0);
        if (written) written[p] = 0;
        sums[p] = ZERO_PAGE_CRC;
        p++;
        i++;
      } else {
        // a stretch of wanted non-zero pages: one copy, then each page's checksum
        const from = p;
        const at = off;
        for (; p < end && want[i] && !isZero(i); p++, i++) {
          sums[p] = known ? known[off / PAGE_SIZE] : crc32(src.subarray(off, off + PAGE_SIZE));
          if (written) written[p] = 1;
          off += PAGE_SIZE;
        }
        copyBytes(dst, from * PAGE_SIZE, src.subarray(at, off));
      }
    }
  }
  if (!claim) {
    for (let k = 0; k < install.length; k += 2) ram.markPresent(install[k], install[k + 1]);
    return install;
  }
  const installed: number[] = [];
  i = 0;
  for (let k = 0; k < batch.runs.length; k += 2)
    for (let p = batch.runs[k]; p < batch.runs[k] + batch.runs[k + 1]; p++, i++) {
      if (!want[i]) continue;
      ram.markPresent(p, 1);
      const n = installed.length;
      if (n > 0 && installed[n - 2] + installed[n - 1] === p) installed[n - 1]++;
      else installed.push(p, 1);
    }
  return installed;
}

/** Folds per-page checksums into one value, page numbers included (order matters). */
export function foldSums(sums: Uint32Array): string {
  let a = 0x811c9dc5;
  let b = 0;
  for (let p = 0; p < sums.length; p++) {
    a = Math.imul(a ^ sums[p], 0x01000193) >>> 0;
    b = (b + Math.imul(sums[p] ^ p, 0x9e3779b1)) >>> 0;
  }
  return `${a.toString(16).padStart(8, '0')}${b.toString(16).padStart(8, '0')}`;
}

/** Checksums of every page of `ram` as it is now (the source, once the guest stopped). */
export function pageSums(ram: GuestRam): Uint32Array {
  const sums = new Uint32Array(ram.pages);
  for (let p = 0; p < ram.pages; p++) sums[p] = ram.isZeroPage(p) ? ZERO_PAGE_CRC : crc32(ram.page(p));
  return sums;
}

/** The thread that checksums RAM for this process's migrations, started on first use. */
let hasher: { worker: Worker; jobs: Map<number, (r: string | Error) => void> } | undefined;
let nextJob = 1;

/** The folded checksum of `ram`, computed on a worker thread. */
export function ramHashOffThread(ram: GuestRam): Promise<string> {
  if (!hasher) {
    const worker = new Worker(new URL('./ram-hash-worker.mjs', import.meta.url));
    const h = { worker, jobs: new Map<number, (r: string | Error) => void>() };
    const fail = (e: Error) => {
      if (hasher === h) hasher = undefined; // the next checksum starts a new thread
      for (const settle of h.jobs.values()) settle(e);
      h.jobs.clear();
    };
    worker.on('message', (m: HashDone) => {
      h.jobs.get(m.id)?.(m.hash);
      h.jobs.delete(m.id);
      if (h.jobs.size === 0) worker.unref(); // idle, it keeps no process alive
    });
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the RAM checksum thread exited (status ${code})`)));
    hasher = h;
  }
  const h = hasher;
  const id = nextJob++;
  return new Promise((resolve, reject) => {
    h.jobs.set(id, (r) => (typeof r === 'string' ? resolve(r) : reject(r)));
    h.worker.ref();
    h.worker.postMessage({ id, ram: ram.buffers } satisfies HashJob);
  });
}
