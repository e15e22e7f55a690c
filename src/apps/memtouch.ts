// `memtouch`: a batch job that writes its working set at a set rate, in steps, in order
// or at random pages. Its progress (pages written, the cursor, the random state) lives in
// guest RAM, so the job carries on where it was after a migration; each page it writes
// holds the step number, so a page lost or stale in a migration shows.

import type { GuestAccess } from '../guest/access.ts';

const MAGIC = 0x4d54434b; // "MTCK"
const HEADER = 4096; // one page: magic, cursor, steps, pages written, random state
const PAGE = 4096;

export interface MemtouchOptions {
  /** MB/s written. */
  rateMBps: number;
  /** Bytes written over, after the header page. */
  workingSetBytes: number;
  /** Pages per step. */
  pagesPerStep: number;
  /** Write every page of the working set once when the job is set up (RAM full of data). */
  prefill: boolean;
  /** Pages in order from the cursor, or uniformly at random over the working set. */
  pattern: 'sequential' | 'random';
}

export const MEMTOUCH_OPTIONS: MemtouchOptions = {
  rateMBps: 50,
  workingSetBytes: 16 * 2 ** 20,
  pagesPerStep: 16,
  prefill: false,
  pattern: 'sequential',
};

const PATTERNS = ['sequential', 'random'];

/** The job's options: the defaults with `options` over them, each checked. */
export function memtouchOptions(options: Record<string, unknown>): MemtouchOptions {
  for (const name of Object.keys(options))
    if (!(name in MEMTOUCH_OPTIONS))
      throw new Error(
        `memtouch app: unknown option '${name}' (known: ${Object.keys(MEMTOUCH_OPTIONS).join(', ')})`,
      );
  const o = { ...MEMTOUCH_OPTIONS, ...(options as Partial<MemtouchOptions>) };
  const bad = (name: string, what: string, v: unknown) =>
    new Error(`memtouch app: option '${name}' must be ${what}, got ${JSON.stringify(v)}`);
  if (!(typeof o.rateMBps === 'number' && o.rateMBps > 0 && o.rateMBps <= 100_000))
    throw bad('rateMBps', 'a number above 0 and at most 100000', o.rateMBps);
  if (!(Number.isInteger(o.workingSetBytes) && o.workingSetBytes >= PAGE))
    throw bad('workingSetBytes', `a whole number of at least ${PAGE}`, o.workingSetBytes);
  if (!(Number.isInteger(o.pagesPerStep) && o.pagesPerStep >= 1 && o.pagesPerStep <= 4096))
    throw bad('pagesPerStep', 'a whole number from 1 to 4096', o.pagesPerStep);
  if (typeof o.prefill !== 'boolean') throw bad('prefill', 'true or false', o.prefill);
  if (!PATTERNS.includes(o.pattern)) throw bad('pattern', PATTERNS.join(' or '), o.pattern);
  return o;
}

export class Memtouch {
  private readonly pages: number;
  private readonly stamp = new Uint8Array(PAGE);

  private constructor(
    private readonly mem: GuestAccess,
    readonly options: MemtouchOptions,
  ) {
    this.pages = Math.max(1, Math.floor(Math.min(options.workingSetBytes, mem.size - HEADER) / PAGE));
  }

  static format(mem: GuestAccess, options: MemtouchOptions): Memtouch {
    mem.writeU32(0, MAGIC);
    for (let i = 4; i < 16; i += 4) mem.writeU32(i, 0);
    mem.writeU32(16, 0x2545f491); // the random pattern's xorshift32 state (never 0)
    const job = new Memtouch(mem, options);
    if (options.prefill) {
      const page = new Uint8Array(PAGE);
      for (let p = 0; p < job.pages; p++) {
        // distinct, incompressible-looking contents: no page is a zero page
        let x = (p + 1) * 2654435761;
        for (let i = 0; i < PAGE; i += 4) {
          x ^= x << 13;
          x ^= x >>> 17;
          x ^= x << 5;
          page[i] = x;
          page[i + 1] = x >>> 8;
          page[i + 2] = x >>> 16;
          page[i + 3] = x >>> 24;
        }
        mem.write(HEADER + p * PAGE, page);
      }
    }
    return job;
  }

  static open(mem: GuestAccess, options: MemtouchOptions): Memtouch {
    if (mem.readU32(0) !== MAGIC) throw new Error('not a memtouch region (bad magic)');
    return new Memtouch(mem, options);
  }

  /** Writes the next pages; returns ms until the next step keeps the rate. */
  step(): number {
    const cursor = this.mem.readU32(4);
    const steps = this.mem.readU32(8) + 1;
    const view = new DataView(this.stamp.buffer);
    const n = this.options.pagesPerStep;
    const random = this.options.pattern === 'random';
    let x = random ? this.mem.readU32(16) : 0;
    for (let i = 0; i < n; i++) {
      let page = (cursor + i) % this.pages;
      if (random) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        page = (x >>> 0) % this.pages;
      }
      view.setUint32(0, steps, true);
      view.setUint32(4, page, true);
      this.mem.write(HEADER + page * PAGE, this.stamp);
    }
    if (random) this.mem.writeU32(16, x >>> 0);
    this.mem.writeU32(4, (cursor + n) % this.pages);
    this.mem.writeU32(8, steps);
    this.mem.writeU32(12, this.mem.readU32(12) + n);
    return (n * PAGE) / (this.options.rateMBps * 1000);
  }

  /** Steps done and pages written so far (read from guest RAM). */
  progress(): { steps: number; pagesWritten: number } {
    return { steps: this.mem.readU32(8), pagesWritten: this.mem.readU32(12) };
  }
}
