// Workloads of the simulated guest: what each task does, as operations of CPU time and
// page touches. Each kind stands for a real program; the defaults and where they come
// from are documented with the kind. Pages are numbered within the VM's RAM in use.

import { HTTP_HEADER_BYTES, HTTP_OBJECT_TYPE, httpObjectSize } from '../apps/http.ts';
import { encodeResponse, textResponse } from '../apps/http-protocol.ts';
import { classOf, classSize, KV_ENTRY_OVERHEAD, KV_HEADER_BYTES, KV_OOM_REPLY_BYTES } from '../apps/kv.ts';
import { kernelPages } from '../guest/machine.ts';
import type { Rng } from './rng.ts';

export type WorkloadKind = 'web' | 'oltp' | 'memtouch' | 'idle' | 'kv' | 'http';

/** One operation: `cpuMs` of work spread evenly over its page touches. */
export interface Operation {
  cpuMs: number;
  /** Pages touched, in order. */
  pages: number[];
  /** How many of the touches (the last ones) are writes. */
  writes: number;
  /** Bytes of the reply a client gets (it leaves through the host's NIC); 0: none modelled. */
  replyBytes?: number;
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
  /**
   * Closed-loop clients sending requests to the server tasks: each thinks `thinkMs` (on
   * average) between a reply and its next request, and each request and its reply spend
   * `pathMs` on their way through the hosts outside the guest (network stacks, a switch);
   * that part runs on host CPUs, and slows as the vCPUs do while a migration loads them.
   */
  clients: { connections: number; thinkMs: number; pathMs: number } | null;
  /** Share of remote faults taken in guest-kernel context (they always block). */
  kernelFaultFraction: number;
  /**
   * Request handlers run one at a time across vCPUs (an app lock, as in Redis and in Ferry's
   * own apps): a handler holds it to its end, through a blocking fault; an async fault
   * parks the task and lets the lock go.
   */
  appLock?: boolean;
  /**
   * A handler parked by an async fault runs again from its start once the page is here, its
   * writes dropped (Ferry's own guest: a JS handler cannot be suspended midway), instead of
   * going on from the faulting touch as a task in a real guest kernel does.
   */
  restartOnPark?: boolean;
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
  /** A request's time on the hosts' request path outside the guest, ms (see WorkloadModel). */
  pathMs: number;
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
  /** A request's time on the hosts' request path outside the guest, ms (see WorkloadModel). */
  pathMs: number;
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
  pathMs: 0,
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
  pathMs: 0,
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
  return serverModel('web', p, (rng, reads) => {
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
  });
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
    clients: { connections: p.connections, thinkMs: p.thinkMs, pathMs: p.pathMs },
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

// --- Ferry's own guest apps -----------------------------------------------------------
//
// `kv` and `http` stand for the two apps the real world runs (src/apps), page for page: each
// request touches the pages the app's code touches serving it, laid out as the app lays out
// its region. The region is the guest RAM Ferry's host gives the app, all of it but the
// guest kernel's first pages (one per vCPU); pages are numbered from the region's start.

export interface KvParams {
  workers: number;
  connections: number;
  thinkMs: number;
  /** A request's time on the hosts' request path outside the guest, ms (see WorkloadModel). */
  pathMs: number;
  /** CPU per request, ms. */
  cpuMs: number;
  /** Keys in the store, redis-benchmark's `-r`: `key:000000000000`, `key:000000000001`, ... */
  keys: number;
  /** Bytes per value, redis-benchmark's `-d`. */
  valueBytes: number;
  /** Share of requests that are SETs; the rest are GETs. */
  setRatio: number;
  kernelFaultFraction: number;
}

export interface HttpParams {
  workers: number;
  connections: number;
  thinkMs: number;
  /** A request's time on the hosts' request path outside the guest, ms (see WorkloadModel). */
  pathMs: number;
  /** CPU per request, ms. */
  cpuMs: number;
  /** Objects served, with sizes cycling through HTTP_OBJECT_MIX (1 to 64 KiB). */
  objects: number;
  /** Counters behind `/hit/<k>`. */
  counters: number;
  /** Share of requests that are hits (`POST /hit/<k>`); the rest are `GET /obj/<i>`. */
  hitRatio: number;
  kernelFaultFraction: number;
}

/**
 * `kv`: Ferry's own key-value app (src/apps/kv.ts) under redis-benchmark, as the lab runs
 * it: a filled store, `-r keys -d valueBytes`, a SET and a GET process side by side on half
 * of the connections each. Every request names a uniformly random key; a GET reads the key's
 * bucket slot and its entry, a SET overwrites the value in place. 16 server tasks, 16
 * connections, 0.1 ms of CPU per request; the app's faults are all taken by its own tasks.
 */
export const KV_DEFAULTS: KvParams = {
  workers: 16,
  connections: 16,
  thinkMs: 0,
  pathMs: 0,
  cpuMs: 0.1,
  keys: 100000,
  valueBytes: 1000,
  setRatio: 0.5,
  kernelFaultFraction: 0,
};

/**
 * `http`: Ferry's own HTTP app (src/apps/http.ts) under wrk with the lab's request mix:
 * `GET /obj/<i>` of a uniformly random object, and with probability `hitRatio` (0.1)
 * `POST /hit/<k>` of a uniformly random counter. Every request counts itself in the header
 * page. 16 server tasks, 16 connections, 0.1 ms of CPU per request; 256 objects and 1024
 * counters as the app's defaults.
 */
export const HTTP_DEFAULTS: HttpParams = {
  workers: 16,
  connections: 16,
  thinkMs: 0,
  pathMs: 0,
  cpuMs: 0.1,
  objects: 256,
  counters: 1024,
  hitRatio: 0.1,
  kernelFaultFraction: 0,
};

const PAGE_BYTES = 4096;
const pageOf = (byte: number): number => Math.floor(byte / PAGE_BYTES);

/** Bytes of the region Ferry's host gives a VM's app (host.ts): RAM less the kernel's pages. */
function appRegionBytes(ramPages: number, vcpus: number): number {
  return Math.max(0, ramPages - kernelPages(vcpus)) * PAGE_BYTES;
}

/** Folds a page beyond the RAM in use back into it (a VM declaring less in use than its app needs). */
function folder(usedPages: number): (page: number) => number {
  const u = Math.max(1, usedPages);
  return (page) => (page < u ? page : page % u);
}

// Geometry kv.ts does not export, mirrored from KvStore.format and heapStartFor.
const KV_MAX_REGION = 0xffff_fff8;
const KV_MAX_BUCKETS = 1 << 24;
/** redis-benchmark's key names: `key:` and 12 digits (`key:__rand_int__`). */
const KV_KEY_BYTES = 16;
/** FNV-1a state (kv.ts's key hash) after `key:`, where every key name starts. */
const KV_KEY_PREFIX_HASH = [...'key:'].reduce(
  (h, c) => Math.imul(h ^ c.charCodeAt(0), 0x01000193),
  0x811c9dc5,
);
const POW10 = Array.from({ length: 12 }, (_, k) => 10 ** (11 - k));

/**
 * Where Ferry's kv app keeps what a request touches. The store fills the region as
 * KvStore.format lays it out: the header at 0, the bucket table at 512 (one u32 per bucket,
 * a bucket per 128 bytes of region rounded down to a power of two), then the heap. Every
 * entry has the same size class, so the bump allocator puts the n-th key stored at heap start
 * + n × block size; key i sits in the i-th block (the order the fill stores keys in only
 * permutes the blocks). Keys whose block would end beyond the RAM in use are absent.
 */
export class KvLayout {
  /** Region bytes, as KvStore.format takes them. */
  readonly regionBytes: number;
  readonly buckets: number;
  /** Byte offset of the heap: the bucket table's end, 8-aligned. */
  readonly heapStart: number;
  /** Bytes of an entry: the block's head, the key, the value. */
  readonly entryBytes: number;
  /** Bytes of an entry's block (its size class). */
  readonly blockSize: number;
  /** Keys stored: 0 .. stored - 1. */
  readonly stored: number;
  private readonly getReplyBytes: number;
  private readonly fold: (page: number) => number;

  constructor(
    private readonly p: KvParams,
    usedPages: number,
    ramPages: number,
    vcpus: number,
  ) {
    const region = appRegionBytes(ramPages, vcpus);
    this.regionBytes = Math.floor(Math.min(region, KV_MAX_REGION) / 8) * 8;
    let buckets = 16;
    while (buckets * 2 <= KV_MAX_BUCKETS && buckets * 2 * 128 <= this.regionBytes) buckets *= 2;
    this.buckets = buckets;
    this.heapStart = (KV_HEADER_BYTES + 4 * buckets + 7) & ~7;
    this.entryBytes = KV_ENTRY_OVERHEAD + KV_KEY_BYTES + p.valueBytes;
    this.blockSize = classSize(classOf(this.entryBytes));
    const end = Math.min(this.regionBytes, Math.max(0, usedPages) * PAGE_BYTES);
    this.stored = Math.min(p.keys, Math.max(0, Math.floor((end - this.heapStart) / this.blockSize)));
    this.fold = folder(usedPages);
    // `$<length>\r\n<value>\r\n`; a SET's is `+OK\r\n`
    this.getReplyBytes = String(p.valueBytes).length + p.valueBytes + 5;
  }

  /** The bucket of key i: its name hashed as kv.ts hashes keys (FNV-1a), masked. */
  bucketOf(i: number): number {
    let h = KV_KEY_PREFIX_HASH;
    const n = i % 1e12;
    for (let k = 0; k < 12; k++) h = Math.imul(h ^ (48 + (Math.floor(n / POW10[k]) % 10)), 0x01000193);
    return (h >>> 0) & (this.buckets - 1);
  }

  /** The page holding key i's bucket slot. */
  bucketPage(i: number): number {
    return this.fold(pageOf(KV_HEADER_BYTES + 4 * this.bucketOf(i)));
  }

  /** A GET (`set` false) or SET of key i; with `reads` false only the pages it writes. */
  op(i: number, set: boolean, reads: boolean): Operation {
    const pages: number[] = [];
    const cpuMs = this.p.cpuMs;
    if (i >= this.stored) {
      // absent: a GET finds an empty chain; a SET runs out of memory once the allocator has
      // read its free-list heads and bump pointer in the header
      if (reads) {
        pages.push(this.bucketPage(i));
        if (set) pages.push(0);
      }
      // `$-1` (nil) or an out-of-memory error
      return { cpuMs, pages, writes: 0, replyBytes: set ? KV_OOM_REPLY_BYTES : 5 };
    }
    const at = this.heapStart + i * this.blockSize;
    const first = pageOf(at);
    const last = pageOf(at + this.entryBytes - 1);
    // a GET reads the entry (head, key, value); a SET reads the head and key and overwrites
    // the value (same length: the length field stays as it is)
    const written = set ? pageOf(at + KV_ENTRY_OVERHEAD + KV_KEY_BYTES) : last + 1;
    if (reads) {
      pages.push(this.bucketPage(i));
      for (let q = first; q < written; q++) pages.push(q);
    }
    for (let q = written; q <= last; q++) pages.push(q);
    return { cpuMs, pages, writes: last + 1 - written, replyBytes: set ? 5 : this.getReplyBytes };
  }
}

/** A hit's reply: the counter's new value as text (a 4-digit one). */
const HTTP_HIT_REPLY_BYTES = textResponse(200, '1000').length;
const HTTP_MISSING_REPLY_BYTES = textResponse(404, 'no such object').length;
/** An object's reply head, but for the digits of its Content-Length. */
const HTTP_OBJECT_HEAD_BYTES =
  encodeResponse(200, '', { contentType: HTTP_OBJECT_TYPE, omitBody: true }).length - 1;

// Geometry http.ts does not export, mirrored from its `geometry` and HttpServer.format.
const HTTP_MAX_REGION = 0xffff_f000;
const HTTP_TABLE_ENTRY = 8;
const pageUp = (n: number): number => Math.ceil(n / PAGE_BYTES) * PAGE_BYTES;

/**
 * Where Ferry's http app keeps what a request touches, as HttpServer.format lays out its
 * region (here the part of it in use): the header page (with the requests and hits
 * counters), the object table (8 bytes per object), the objects back to back from the next
 * page on, then the counters (u32 each) from the page after the last object. Objects that
 * do not fit are left out, as format leaves them out; a request for one is answered 404.
 */
export class HttpLayout {
  /** Objects laid out: those asked for, fewer when the region cannot hold them. */
  readonly objects: number;
  readonly counterTable: number;
  /** Each object's first and last page. */
  private readonly first: Int32Array;
  private readonly last: Int32Array;
  private readonly fold: (page: number) => number;

  constructor(
    private readonly p: HttpParams,
    usedPages: number,
    ramPages: number,
    vcpus: number,
  ) {
    const size = Math.min(
      appRegionBytes(ramPages, vcpus),
      Math.max(0, usedPages) * PAGE_BYTES,
      HTTP_MAX_REGION,
    );
    // format drops objects from the end until the rest fits (it refuses a region without
    // room for one: here that one is folded into the RAM in use)
    const sizes = new Float64Array(p.objects + 1);
    for (let i = 0; i < p.objects; i++) sizes[i + 1] = sizes[i] + httpObjectSize(i);
    const data = (n: number) => HTTP_HEADER_BYTES + pageUp(n * HTTP_TABLE_ENTRY);
    const counterTable = (n: number) => pageUp(data(n) + sizes[n]);
    let n = p.objects;
    while (n > 1 && counterTable(n) + p.counters * 4 > size) n--;
    this.objects = n;
    this.counterTable = counterTable(n);
    this.first = new Int32Array(n);
    this.last = new Int32Array(n);
    let at = data(n);
    for (let i = 0; i < n; i++) {
      const len = httpObjectSize(i);
      this.first[i] = pageOf(at);
      this.last[i] = pageOf(at + len - 1);
      at += len;
    }
    this.fold = folder(usedPages);
  }

  /** `GET /obj/<i>`: the object's table entry and bytes read, the requests counter written. */
  get(i: number, reads: boolean): Operation {
    const pages: number[] = [];
    if (reads && i < this.objects) {
      pages.push(this.fold(pageOf(HTTP_HEADER_BYTES + HTTP_TABLE_ENTRY * i)));
      for (let q = this.first[i]; q <= this.last[i]; q++) pages.push(this.fold(q));
    }
    pages.push(0);
    return { cpuMs: this.p.cpuMs, pages, writes: 1, replyBytes: this.replyBytes(i) };
  }

  /** Bytes of the reply to `GET /obj/<i>`: the object with its head, or a 404. */
  private replyBytes(i: number): number {
    if (i >= this.objects) return HTTP_MISSING_REPLY_BYTES;
    const size = httpObjectSize(i);
    return HTTP_OBJECT_HEAD_BYTES + String(size).length + size;
  }

  /** `POST /hit/<k>`: the requests and hits counters and counter k written. */
  hit(k: number): Operation {
    const pages = [0, this.fold(pageOf(this.counterTable + 4 * k))];
    return { cpuMs: this.p.cpuMs, pages, writes: 2, replyBytes: HTTP_HIT_REPLY_BYTES };
  }
}

/** Server tasks answering closed-loop clients, each request one operation from `next`. */
function serverModel(
  kind: WorkloadKind,
  p: { workers: number; connections: number; thinkMs: number; pathMs: number; kernelFaultFraction: number },
  next: TaskClass['next'],
  ferryApp = false,
): WorkloadModel {
  return {
    kind,
    clients: { connections: p.connections, thinkMs: p.thinkMs, pathMs: p.pathMs },
    kernelFaultFraction: p.kernelFaultFraction,
    tasks: [{ name: 'worker', count: p.workers, role: 'server', pauseMs: 0, next }],
    // Ferry's apps hold one lock for every handler and rerun a parked one
    appLock: ferryApp,
    restartOnPark: ferryApp,
  };
}

export function kvModel(p: KvParams, usedPages: number, ramPages: number, vcpus: number): WorkloadModel {
  const layout = new KvLayout(p, usedPages, ramPages, vcpus);
  // Ferry's apps serve one request at a time, whatever the vCPUs
  return serverModel(
    'kv',
    p,
    (rng, reads) => {
      const key = rng.int(p.keys);
      return layout.op(key, rng.next() < p.setRatio, reads);
    },
    true,
  );
}

export function httpModel(p: HttpParams, usedPages: number, ramPages: number, vcpus: number): WorkloadModel {
  const layout = new HttpLayout(p, usedPages, ramPages, vcpus);
  return serverModel(
    'http',
    p,
    (rng, reads) =>
      rng.next() < p.hitRatio ? layout.hit(rng.int(p.counters)) : layout.get(rng.int(p.objects), reads),
    true,
  );
}
