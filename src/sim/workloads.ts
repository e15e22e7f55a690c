// Workloads of the simulated guest: what each task does, as operations of CPU time and
// page touches. Each kind stands for a real program; the defaults and where they come
// from are documented with the kind. Pages are numbered within the VM's RAM in use.

import type { Rng } from './rng.ts';

export type WorkloadKind = 'web' | 'oltp' | 'memtouch' | 'idle';

/** One operation: `cpuMs` of work spread evenly over its page touches. */
export interface Operation {
  cpuMs: number;
  /** Pages touched, in order. */
  pages: number[];
  /** How many of the touches (the last ones) are writes. */
  writes: number;
}

export interface TaskClass {
  name: string;
  count: number;
  /** `server`: serves client requests from the shared queue; `loop`: works on its own. */
  role: 'server' | 'loop';
  /** Loop tasks: pause between operations, ms (0 = back to back). */
  pauseMs: number;
  /**
   * The next operation. Reads matter only while pages may be missing (postcopy): with
   * `reads` false an operation lists just the pages it writes, which keeps the long
   * stretches with all memory local cheap to simulate.
   */
  next(rng: Rng, reads: boolean): Operation;
}

export interface WorkloadModel {
  kind: WorkloadKind;
  tasks: TaskClass[];
  /** Closed-loop clients sending requests to the server tasks. */
  clients: { connections: number; thinkMs: number } | null;
  /** Share of remote faults taken in guest-kernel context (they always block). */
  kernelFaultFraction: number;
}

/**
 * Skewed choice among `n` items: rank r has probability ∝ 1/(r+1) (Zipf, exponent 1),
 * drawn as a log-uniform rank (inverse transform, piecewise linear over 1024 buckets so a
 * draw costs no exp/log); ranks are scattered over the region so hot items are not all
 * neighbours.
 */
export class Zipf {
  private static readonly BUCKETS = 1024;
  private readonly edges: Float64Array;

  constructor(
    private readonly base: number,
    private readonly n: number,
  ) {
    const k = Zipf.BUCKETS;
    this.edges = new Float64Array(k + 1);
    const l = Math.log(n + 1);
    for (let b = 0; b <= k; b++) this.edges[b] = Math.exp((b / k) * l) - 1;
  }

  draw(rng: Rng): number {
    const x = rng.next() * Zipf.BUCKETS;
    const b = Math.floor(x);
    const lo = this.edges[b];
    const rank = Math.min(this.n - 1, Math.floor(lo + (x - b) * (this.edges[b + 1] - lo)));
    return this.base + ((Math.imul(rank, 0x9e3779b1) >>> 0) % this.n);
  }
}

export interface WebParams {
  workers: number;
  connections: number;
  thinkMs: number;
  cpuMs: number;
  hotSetMiB: number;
  touches: number;
  coldTouches: number;
  writes: number;
  kernelFaultFraction: number;
}

export interface OltpParams {
  workers: number;
  connections: number;
  thinkMs: number;
  cpuMs: number;
  /** B-tree depth above the leaves: root and inner pages are touched on every lookup. */
  depth: number;
  lookups: number;
  writes: number;
  logWriteIntervalMs: number;
  kernelFaultFraction: number;
}

export interface MemtouchParams {
  rateMBps: number;
  workingSetMiB: number;
  pattern: 'sequential' | 'random';
  kernelFaultFraction: number;
}

/**
 * `web`: a pre-forked web server (Apache prefork / PHP-FPM style) serving closed-loop
 * clients. Defaults follow typical dynamic-page figures: ~2 ms of CPU per request, a few
 * tens of distinct pages touched (code, templates, session and cache data) with a
 * Zipf-skewed popularity over a hot set of a few hundred MiB, a cold touch (a file not in
 * the hot set), and a few written pages (session, access log). About 10% of faults come
 * from kernel context (network stack, page tables, file system).
 */
export const WEB_DEFAULTS: WebParams = {
  workers: 16,
  connections: 64,
  thinkMs: 0,
  cpuMs: 2,
  hotSetMiB: 256,
  touches: 30,
  coldTouches: 1,
  writes: 3,
  kernelFaultFraction: 0.1,
};

/**
 * `oltp`: a database (InnoDB-like) running short transactions: each lookup walks a B-tree
 * (root and inner pages hot, leaves Zipf-skewed over the buffer pool), updates write
 * leaves, and a log writer appends to the redo log. Fewer worker threads than the web
 * server (one per connection pool slot), more CPU per operation, more writes.
 */
export const OLTP_DEFAULTS: OltpParams = {
  workers: 8,
  connections: 32,
  thinkMs: 0,
  cpuMs: 2,
  depth: 3,
  lookups: 8,
  writes: 4,
  logWriteIntervalMs: 1,
  kernelFaultFraction: 0.15,
};

/** `memtouch`: a memory-writing batch job (precopy's worst case), like `stress --vm`. */
export const MEMTOUCH_DEFAULTS: MemtouchParams = {
  rateMBps: 200,
  workingSetMiB: 512,
  pattern: 'random',
  kernelFaultFraction: 0,
};

const PAGES_PER_MIB = 256;

export function webModel(p: WebParams, usedPages: number): WorkloadModel {
  const hot = Math.max(1, Math.min(usedPages, Math.round(p.hotSetMiB * PAGES_PER_MIB)));
  const zipf = new Zipf(0, hot);
  const logStart = Math.min(usedPages - 1, hot);
  const logPages = Math.max(1, Math.min(4096, usedPages - logStart));
  let logCursor = 0;
  return {
    kind: 'web',
    clients: { connections: p.connections, thinkMs: p.thinkMs },
    kernelFaultFraction: p.kernelFaultFraction,
    tasks: [
      {
        name: 'worker',
        count: p.workers,
        role: 'server',
        pauseMs: 0,
        next(rng, reads) {
          const pages: number[] = [];
          if (reads) {
            for (let i = 0; i < p.touches; i++) pages.push(zipf.draw(rng));
            for (let i = 0; i < p.coldTouches; i++) pages.push(rng.int(usedPages));
          }
          // writes: the access log, appended, and session pages in the hot set
          for (let i = 0; i < p.writes; i++) {
            if (i === 0) pages.push(logStart + (logCursor++ % logPages));
            else pages.push(zipf.draw(rng));
          }
          return { cpuMs: p.cpuMs, pages, writes: p.writes };
        },
      },
    ],
  };
}

export function oltpModel(p: OltpParams, usedPages: number): WorkloadModel {
  // layout: [inner pages][leaves …][redo log]
  const logPages = Math.max(1, Math.min(8192, Math.floor(usedPages / 16)));
  const treePages = Math.max(2, usedPages - logPages);
  const inner = Math.max(1, Math.min(treePages - 1, Math.round(treePages / 200)));
  const leaves = treePages - inner;
  let logCursor = 0;
  const innerZipf = new Zipf(0, inner);
  const leafZipf = new Zipf(inner, leaves);
  const lookup = (rng: Rng, pages: number[], reads: boolean) => {
    // root, then one inner page per level (inner levels are small and hot), then a leaf
    const leaf = leafZipf.draw(rng);
    if (!reads) return leaf;
    pages.push(0);
    for (let d = 1; d < p.depth; d++) pages.push(Math.min(inner - 1, innerZipf.draw(rng)));
    pages.push(leaf);
    return leaf;
  };
  return {
    kind: 'oltp',
    clients: { connections: p.connections, thinkMs: p.thinkMs },
    kernelFaultFraction: p.kernelFaultFraction,
    tasks: [
      {
        name: 'worker',
        count: p.workers,
        role: 'server',
        pauseMs: 0,
        next(rng, reads) {
          const pages: number[] = [];
          const leaves: number[] = [];
          for (let i = 0; i < p.lookups; i++) leaves.push(lookup(rng, pages, reads));
          for (let i = 0; i < p.writes; i++) pages.push(leaves[i % leaves.length]);
          return { cpuMs: p.cpuMs, pages, writes: p.writes };
        },
      },
      {
        name: 'log-writer',
        count: 1,
        role: 'loop',
        pauseMs: p.logWriteIntervalMs,
        next() {
          const page = treePages + (logCursor++ % logPages);
          return { cpuMs: 0.02, pages: [page], writes: 1 };
        },
      },
    ],
  };
}

export function memtouchModel(p: MemtouchParams, usedPages: number): WorkloadModel {
  const ws = Math.max(1, Math.min(usedPages, Math.round(p.workingSetMiB * PAGES_PER_MIB)));
  const batch = 64; // pages written per operation
  const cpuPerPageMs = 0.0005; // ~8 GB/s of memset on one core
  const periodMs = (batch * 4096) / (p.rateMBps * 1e3); // MB/s = bytes/ms / 1000
  let cursor = 0;
  return {
    kind: 'memtouch',
    clients: null,
    kernelFaultFraction: p.kernelFaultFraction,
    tasks: [
      {
        name: 'writer',
        count: 1,
        role: 'loop',
        pauseMs: Math.max(0, periodMs - batch * cpuPerPageMs),
        next(rng) {
          const pages: number[] = [];
          for (let i = 0; i < batch; i++)
            pages.push(p.pattern === 'sequential' ? cursor++ % ws : rng.int(ws));
          return { cpuMs: batch * cpuPerPageMs, pages, writes: batch };
        },
      },
    ],
  };
}

export const IDLE_MODEL: WorkloadModel = { kind: 'idle', tasks: [], clients: null, kernelFaultFraction: 0 };
