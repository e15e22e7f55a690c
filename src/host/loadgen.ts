// A closed-loop Redis-protocol load generator for a VM's kv endpoint: N connections, each
// with one command in flight (SET key value or GET key), throughput in bins and latency
// percentiles. It follows a migrating VM: when a connection drops (the source host closes
// client connections at the switchover) it asks `locate()` where the VM is now, reconnects
// and sends again the command that was in flight (SET and GET are idempotent).
//
// Each connection owns a slice of the key space (key i belongs to connection i mod N), so
// the writes to a key are sequential and the last acknowledged SET of every key is the value
// the store must hold: `acked` records it, a GET that returns anything else is counted in
// `staleReads`, and `checkAcked` reads every key back afterwards.

import net from 'node:net';
import { encodeCommand, RespReplyParser, type RespValue } from '../apps/resp.ts';
import { type Percentiles, percentiles } from '../engine/stats.ts';

export interface LoadOptions {
  /** "host:port" of the VM's endpoint to start with. */
  endpoint: string;
  /**
   * Where the VM's endpoint is now ("host:port"), asked after a connection dropped or could
   * not be opened; given the endpoint that failed. Default: the same endpoint again.
   */
  locate?: (lost: string) => Promise<string>;
  /** Connections, each with one command in flight (default 8). */
  connections?: number;
  /** Keys `${keyPrefix}0` … `${keyPrefix}${keys - 1}` (default 10,000; at least one per connection). */
  keys?: number;
  keyPrefix?: string;
  /** Names key i (default `${keyPrefix}${i}`), e.g. as redis-benchmark names its keys. */
  keyName?: (i: number) => string;
  /** Each connection goes through its keys once, in order, instead of at random (a fill). */
  sequential?: boolean;
  /** Share of commands that are SETs, 0..1 (default 0.5). */
  setRatio?: number;
  /** Bytes of each SET value (default 64; at least enough to tell values apart). */
  valueBytes?: number;
  /**
   * Each connection waits this long (ms) between a reply and its next command, as a client
   * with work of its own between requests does (default 0: at once). A closed loop with
   * think time leaves the machine room: without it the load takes every core there is.
   */
  thinkMs?: number;
  /** Stop after issuing this many commands in all. */
  requests?: number;
  /** Stop issuing commands after this long (ms). At least one of `requests`, `durationMs`. */
  durationMs?: number;
  /** Throughput and latency bins (ms, default 100). */
  binMs?: number;
  seed?: number;
  /** A command without a reply this long (ms) is sent again on a new connection (default 5000). */
  requestTimeoutMs?: number;
  /**
   * A connection that cannot be re-established for this long (ms) gives up, and so does one
   * still waiting for its last reply this long after the run stopped (default 15,000).
   */
  reconnectTimeoutMs?: number;
}

export interface LoadResult {
  /** Commands issued, each counted once however often it was sent again. */
  sent: number;
  /** Commands answered (a value, OK or an error reply). */
  completed: number;
  /** Commands given up unanswered (a connection that could not reconnect in time). */
  lost: number;
  sets: number;
  gets: number;
  /** Error replies, and the first one's text. */
  errors: number;
  firstError: string | undefined;
  /** Connections re-established after a drop. */
  reconnects: number;
  /** Commands sent again after a drop or a timeout. */
  retries: number;
  /** Commands whose reply did not come within `requestTimeoutMs`. */
  timeouts: number;
  /** GETs of a key written in this run that returned anything but its last acknowledged value. */
  staleReads: number;
  staleExamples: string[];
  /** When the run began (ms since the epoch, sub-ms precision) and how long it took. */
  startedAt: number;
  durationMs: number;
  opsPerSec: number;
  /** Client-side latency (first send to reply, retries included), ms. */
  latencyMs: Percentiles;
  /** Completed operations per second per bin: [tMs since start, opsPerSec]. */
  throughput: [number, number][];
  /** Latency of operations completed in each bin: [tMs, p50Ms, p99Ms]. */
  latencySeries: [number, number, number][];
  /** Last acknowledged value of every key written. */
  acked: Map<string, string>;
  /** The endpoint the connections last used. */
  endpoint: string;
}

/** Counters while the run goes on. */
export interface LoadProgress {
  sent: number;
  completed: number;
  reconnects: number;
  retries: number;
}

export interface LoadRun {
  readonly done: Promise<LoadResult>;
  /** Stops issuing commands; `done` resolves once the commands in flight are answered. */
  stop(): void;
  progress(): LoadProgress;
}

/** Runs the load until its request count or duration is reached. */
export function runLoad(opts: LoadOptions): Promise<LoadResult> {
  return startLoad(opts).done;
}

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** "host:port" (the host may be a bracketed IPv6 address). */
export function parseEndpoint(endpoint: string): { host: string; port: number } {
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(endpoint);
  if (!m) throw new RangeError(`endpoint '${endpoint}' is not HOST:PORT`);
  return { host: m[1] || '127.0.0.1', port: Number(m[2]) };
}

/** A small seeded PRNG (mulberry32), uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function connect(endpoint: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    let addr: { host: string; port: number };
    try {
      addr = parseEndpoint(endpoint);
    } catch (e) {
      reject(e);
      return;
    }
    const s = net.connect(addr);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connecting to ${endpoint} timed out`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      s.destroy();
      reject(e);
    });
  });
}

interface Command {
  set: boolean;
  key: string;
  value: string;
  bytes: Uint8Array;
  firstSentAt: number;
  lastSentAt: number;
}

function describe(v: RespValue): string {
  switch (v.type) {
    case 'bulk':
      return v.value === null ? 'nil' : JSON.stringify(Buffer.from(v.value).toString('latin1'));
    case 'array':
      return 'an array';
    default:
      return `${v.type} ${String(v.value)}`;
  }
}

export function startLoad(opts: LoadOptions): LoadRun {
  const connections = opts.connections ?? 8;
  const keys = opts.keys ?? 10_000;
  const prefix = opts.keyPrefix ?? 'load:';
  const keyName = opts.keyName ?? ((i: number) => `${prefix}${i}`);
  const setRatio = opts.setRatio ?? 0.5;
  const valueBytes = opts.valueBytes ?? 64;
  const binMs = opts.binMs ?? 100;
  const thinkMs = opts.thinkMs ?? 0;
  if (!(thinkMs >= 0)) throw new RangeError(`thinkMs: ${thinkMs} must be ≥ 0`);
  const requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
  const reconnectTimeoutMs = opts.reconnectTimeoutMs ?? 15_000;
  const locate = opts.locate ?? (async (e: string) => e);
  if (!(Number.isInteger(connections) && connections >= 1))
    throw new RangeError(`connections: ${connections} must be a whole number ≥ 1`);
  if (!(Number.isInteger(keys) && keys >= connections))
    throw new RangeError(`keys: ${keys} must be a whole number ≥ connections (${connections})`);
  if (!(setRatio >= 0 && setRatio <= 1)) throw new RangeError(`setRatio: ${setRatio} must be in 0..1`);
  if (opts.requests === undefined && opts.durationMs === undefined)
    throw new RangeError('a load needs a bound: requests or durationMs');
  parseEndpoint(opts.endpoint);

  const rng = seededRandom(opts.seed ?? 1);
  const startedAt = now();
  const acked = new Map<string, string>();
  const doneAt: number[] = [];
  const latencies: number[] = [];
  const r = {
    sent: 0,
    completed: 0,
    lost: 0,
    sets: 0,
    gets: 0,
    errors: 0,
    firstError: undefined as string | undefined,
    reconnects: 0,
    retries: 0,
    timeouts: 0,
    staleReads: 0,
    staleExamples: [] as string[],
  };
  let endpoint = opts.endpoint;
  let stopping = false;
  let stoppedAt = 0;
  let running = connections;
  let resolveDone!: (v: LoadResult) => void;
  const done = new Promise<LoadResult>((res) => {
    resolveDone = res;
  });
  const padding = 'x'.repeat(Math.max(0, valueBytes));

  const canIssue = () => !stopping && (opts.requests === undefined || r.sent < opts.requests);

  class Connection {
    private socket: net.Socket | undefined;
    private parser = new RespReplyParser();
    inflight: Command | undefined;
    private seq = 0;
    private finished = false;
    /** Since when no reply has come through a (re)opened connection, and the next pause. */
    private troubleSince = -1;
    private backoffMs = 5;
    private readonly keysOwned: number;
    /** The next of its keys in a sequential run. */
    private cursor = 0;

    constructor(readonly id: number) {
      this.keysOwned = Math.floor((keys - 1 - id) / connections) + 1;
    }

    async open(): Promise<void> {
      await this.reconnect(false);
    }

    private next(): void {
      if (this.finished) return;
      // a sequential run writes each of its keys once
      if (!canIssue() || (opts.sequential && this.cursor >= this.keysOwned)) {
        this.finish();
        return;
      }
      const slot = opts.sequential ? this.cursor++ % this.keysOwned : Math.floor(rng() * this.keysOwned);
      const key = keyName(this.id + connections * slot);
      const set = rng() < setRatio;
      let value = '';
      let bytes: Uint8Array;
      if (set) {
        const tag = `${this.id}:${this.seq++}:`;
        value = tag + padding.slice(tag.length);
        bytes = encodeCommand(['SET', key, value]);
        r.sets++;
      } else {
        bytes = encodeCommand(['GET', key]);
        r.gets++;
      }
      r.sent++;
      const t = now();
      this.inflight = { set, key, value, bytes, firstSentAt: t, lastSentAt: t };
      this.socket!.write(bytes);
    }

    private reply(v: RespValue): void {
      const c = this.inflight;
      if (!c) return; // a reply nobody asked for: ignore
      this.inflight = undefined;
      this.troubleSince = -1;
      this.backoffMs = 5;
      const t = now();
      doneAt.push(t - startedAt);
      latencies.push(t - c.firstSentAt);
      r.completed++;
      if (v.type === 'error') {
        r.errors++;
        r.firstError ??= v.value;
      } else if (c.set) {
        if (v.type === 'simple' && v.value === 'OK') acked.set(c.key, c.value);
        else {
          r.errors++;
          r.firstError ??= `SET ${c.key} answered ${describe(v)}`;
        }
      } else {
        // keys this run has not written may hold anything (an earlier run's values)
        const want = acked.get(c.key);
        const got =
          v.type === 'bulk' && v.value !== null ? Buffer.from(v.value).toString('latin1') : undefined;
        if (want !== undefined && got !== want) {
          r.staleReads++;
          if (r.staleExamples.length < 5)
            r.staleExamples.push(
              `GET ${c.key} returned ${describe(v)}, last acknowledged ${JSON.stringify(want)}`,
            );
        }
      }
      if (thinkMs > 0) setTimeout(() => this.next(), thinkMs);
      else this.next();
    }

    private attach(s: net.Socket): void {
      this.socket = s;
      this.parser = new RespReplyParser();
      s.on('data', (chunk: Buffer) => {
        if (this.socket !== s) return;
        const res = this.parser.push(chunk);
        for (const v of res.replies) this.reply(v);
        if (res.error) s.destroy();
      });
      s.on('error', () => {});
      s.on('close', () => {
        if (this.socket !== s || this.finished) return;
        this.socket = undefined;
        void this.reconnect(true);
      });
    }

    /** (Re)opens the connection, asking `locate` between attempts; then resumes the loop. */
    private async reconnect(dropped: boolean): Promise<void> {
      // a host that accepts connections and drops them again (the VM is not running there)
      // counts as one stretch of trouble: the pauses grow and the give-up clock runs on
      if (this.troubleSince < 0) this.troubleSince = now();
      if (dropped && this.backoffMs > 5) await sleep(this.backoffMs);
      let target = dropped ? await locate(endpoint).catch(() => endpoint) : endpoint;
      for (;;) {
        if (this.finished) return;
        if (!this.inflight && !canIssue()) return this.finish();
        if (now() - this.troubleSince > reconnectTimeoutMs) return this.giveUp();
        try {
          const s = await connect(target, 2000);
          if (this.finished) {
            s.destroy();
            return;
          }
          endpoint = target;
          if (dropped) r.reconnects++;
          this.backoffMs = Math.min(this.backoffMs * 2, 100);
          this.attach(s);
          const c = this.inflight;
          if (c) {
            r.retries++;
            c.lastSentAt = now();
            s.write(c.bytes);
          } else this.next();
          return;
        } catch {
          await sleep(this.backoffMs);
          this.backoffMs = Math.min(this.backoffMs * 2, 100);
          target = await locate(target).catch(() => target);
        }
      }
    }

    /** Called now and then: a reply overdue, or a drain that takes too long. */
    watchdog(t: number): void {
      if (this.finished) return;
      if (stopping && t - stoppedAt > reconnectTimeoutMs) {
        this.giveUp();
        return;
      }
      const c = this.inflight;
      if (c && this.socket && t - c.lastSentAt > requestTimeoutMs) {
        r.timeouts++;
        this.socket.destroy(); // the close handler reconnects and sends it again
      }
    }

    private giveUp(): void {
      if (this.inflight) r.lost++;
      this.inflight = undefined;
      this.finish();
    }

    private finish(): void {
      if (this.finished) return;
      this.finished = true;
      const s = this.socket;
      this.socket = undefined;
      s?.destroy();
      if (--running === 0) end();
    }
  }

  const conns = Array.from({ length: connections }, (_, i) => new Connection(i));
  const watchdog = setInterval(() => {
    const t = now();
    for (const c of conns) c.watchdog(t);
  }, 50);
  const durationTimer = opts.durationMs === undefined ? undefined : setTimeout(() => stop(), opts.durationMs);

  function stop(): void {
    if (stopping) return;
    stopping = true;
    stoppedAt = now();
  }

  function end(): void {
    clearInterval(watchdog);
    clearTimeout(durationTimer);
    const durationMs = now() - startedAt;
    resolveDone({
      ...r,
      startedAt,
      durationMs,
      opsPerSec: durationMs > 0 ? (r.completed * 1000) / durationMs : 0,
      latencyMs: percentiles([...latencies]),
      ...bins(doneAt, latencies, binMs, durationMs),
      acked,
      endpoint,
    });
  }

  for (const c of conns) void c.open();
  return {
    done,
    stop,
    progress: () => ({ sent: r.sent, completed: r.completed, reconnects: r.reconnects, retries: r.retries }),
  };
}

function bins(
  doneAt: number[],
  latencies: number[],
  binMs: number,
  durationMs: number,
): Pick<LoadResult, 'throughput' | 'latencySeries'> {
  const n = Math.max(1, Math.ceil(durationMs / binMs));
  const per: number[][] = Array.from({ length: n }, () => []);
  for (let i = 0; i < doneAt.length; i++)
    per[Math.min(n - 1, Math.floor(doneAt[i] / binMs))].push(latencies[i]);
  return {
    throughput: per.map((l, b) => [b * binMs, (l.length * 1000) / binMs]),
    latencySeries: per.map((l, b) => {
      const p = percentiles(l);
      return [b * binMs, p.p50, p.p99];
    }),
  };
}

export interface AckedCheck {
  checked: number;
  /** Keys that read back nil. */
  missing: number;
  /** Keys that read back another value. */
  wrong: number;
  examples: string[];
}

/**
 * Reads every key of `acked` back on a fresh connection (pipelined) and compares; fails if
 * the endpoint goes quiet for `timeoutMs`.
 */
export async function checkAcked(
  endpoint: string,
  acked: Map<string, string>,
  batch = 200,
  timeoutMs = 10_000,
): Promise<AckedCheck> {
  const s = await connect(endpoint, timeoutMs);
  const parser = new RespReplyParser();
  const out: AckedCheck = { checked: 0, missing: 0, wrong: 0, examples: [] };
  let waiting: ((v: RespValue[]) => void) | undefined;
  let failed: ((e: Error) => void) | undefined;
  let got: RespValue[] = [];
  let want = 0;
  s.on('data', (chunk: Buffer) => {
    const res = parser.push(chunk);
    got.push(...res.replies);
    if (res.error) failed?.(new Error(`bad reply from ${endpoint}: ${res.error.message}`));
    else if (got.length >= want) waiting?.(got);
  });
  s.on('error', (e) => failed?.(e));
  s.setTimeout(timeoutMs, () => failed?.(new Error(`${endpoint} sent no reply for ${timeoutMs} ms`)));
  s.on('close', () => failed?.(new Error(`${endpoint} closed the connection while keys were read back`)));
  try {
    const entries = [...acked];
    for (let i = 0; i < entries.length; i += batch) {
      const part = entries.slice(i, i + batch);
      got = [];
      want = part.length;
      const replies = new Promise<RespValue[]>((res, rej) => {
        waiting = res;
        failed = rej;
      });
      s.write(Buffer.concat(part.map(([k]) => encodeCommand(['GET', k]))));
      const vs = await replies;
      part.forEach(([k, v], j) => {
        const r = vs[j];
        out.checked++;
        if (r.type === 'bulk' && r.value === null) out.missing++;
        else if (!(r.type === 'bulk' && Buffer.from(r.value!).toString('latin1') === v)) out.wrong++;
        else return;
        if (out.examples.length < 5)
          out.examples.push(`${k}: read ${describe(r)}, expected ${JSON.stringify(v)}`);
      });
    }
  } finally {
    failed = undefined;
    s.destroy();
  }
  return out;
}
