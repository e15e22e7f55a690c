// The clients that load a VM while it migrates, behind one interface: the built-in ones
// (the RESP load generator of loadgen.ts for kv, a closed-loop HTTP/1.1 keep-alive client
// for http) and two external tools, `redis-benchmark` for kv and `wrk` for http. Each runs
// until stop() and then tells what it saw in the same shape (ClientResult).
//
// How each one counts:
// - builtin kv: the load generator's own counters. errors = error replies + commands given up
//   + replies overdue + stale reads; connectionsLost = reconnects (the generator resends the
//   command in flight on a new connection, so a drop alone is not an error). A run that never
//   opened a connection reports one error naming why the address cannot be reached.
// - builtin http: one socket per connection, one request in flight on it, responses framed by
//   Content-Length. errors = non-2xx answers + lost connections + connect failures + responses
//   overdue (5 s) + malformed responses; a connection the server closes or resets (other than
//   after `Connection: close`) is lost, and the request in flight on it is not sent again.
// - redis-benchmark: two processes, SET and GET, each with half of the connections, `-l -q`
//   and a large `-n`, so both commands run all along and every connection stays open (one
//   process running `-t set,get` would run only SET for minutes, and it reconnects all its
//   clients between tests). It prints no count until a test ends, but redraws a progress line
//   every 250 ms: `SET: rps=<last interval> (overall: <since the test began>) ...`. Requests =
//   n per finished test + the overall rate × the time from the test's first progress line to
//   its latest (at stop(), plus the last interval's rate × the time since the latest line).
//   A line of its output matching /error|reset|closed|refused|timeout/i is an error, and so
//   is its exiting before stop(): it exits at the first error reply, and at a lost connection
//   when a read fails. When a write fails instead (and when it cannot connect at the start),
//   7.0 spins at full CPU and prints nothing more: a process silent for 2 s is killed and
//   counted as an error and a lost connection. It dies on SIGINT without a summary.
// - wrk: a Lua script picks each request's path; its request() hook writes a running count to
//   stderr every 100 requests (wrk prints nothing else until it ends), for progress(). On
//   SIGINT wrk stops and prints its summary (checked with wrk 4.1.0): requests from
//   "N requests in", errors = connect + read + write + timeout socket errors + non-2xx/3xx
//   responses, connectionsLost = read + write errors (wrk reconnects after either), latency
//   from `--latency`. wrk also exits at once when it cannot connect at the start: an error.
//
// Child processes are killed (and wrk's script removed) on stop() and, should the caller never
// stop them, when this process exits.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HTTP_OPTIONS } from '../apps/http.ts';
import { percentiles } from '../engine/stats.ts';
import { type LoadResult, parseEndpoint, seededRandom, startLoad } from '../host/loadgen.ts';

export type ClientKind = 'builtin' | 'redis-benchmark' | 'wrk';

export interface ClientOptions {
  /** "host:port" of the VM's client address. */
  address: string;
  app: 'kv' | 'http';
  /** Connections, each with one request in flight (default 16). */
  connections: number;
  /** kv: keys and value size; http: how many objects / counters the app has (for request paths). */
  keys?: number;
  valueBytes?: number;
  objects?: number;
  counters?: number;
  seed?: number;
}

export interface ClientResult {
  /** Which client ran. */
  client: ClientKind;
  /** e.g. 'redis-benchmark 7.0.15', 'wrk 4.1.0', 'built-in RESP client', 'built-in HTTP client'. */
  tool: string;
  /** Requests completed as the client counts them (an estimate for redis-benchmark). */
  requests: number;
  /**
   * Client-visible errors: error replies, non-2xx, socket errors and timeouts, lost
   * connections, stale reads (builtin kv).
   */
  errors: number;
  /** Connections that dropped (as far as the tool tells). */
  connectionsLost: number;
  firstError?: string;
  /**
   * Completed ops per 100 ms bin since start, as [tMs, ops per second in the bin], when the
   * client can tell (builtin only); else [].
   */
  throughput: [number, number][];
  latencyMs?: { p50: number; p99: number; max: number };
  /** Raw tool output tail, for diagnostics. */
  output: string;
}

export interface ClientRun {
  readonly kind: ClientKind;
  progress(): { requests: number };
  /** Stops the load (idempotent); resolves once the client has wound down. */
  stop(): Promise<ClientResult>;
}

type Tool = 'redis-benchmark' | 'wrk';

const BIN_MS = 100;
const HTTP_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 2000;
/** Requests per redis-benchmark test: far more than a run lasts (≈100 s at 20,000 per second). */
const RB_REQUESTS = 2_000_000;
const KILL_GRACE_MS = 5000;
const OUTPUT_LINES = 30;

const now = () => performance.now();

// ---------------------------------------------------------------------------------------
// Which client

const versions = new Map<string, string | null>();

/** The tool's version string ('wrk 4.1.0'), or null when it is not on `searchPath` or does not run. */
function toolVersion(tool: Tool, searchPath: string | undefined = process.env.PATH): string | null {
  const key = `${tool}\0${searchPath ?? ''}`;
  const known = versions.get(key);
  if (known !== undefined) return known;
  const r = spawnSync(tool, [tool === 'wrk' ? '-v' : '--version'], {
    env: { ...process.env, PATH: searchPath ?? '' },
    encoding: 'utf8',
    timeout: 5000,
  });
  // `wrk -v` prints its version and the usage, and exits with status 1
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const m = new RegExp(`${tool}\\s+v?(?:\\S*/)?(\\d+(?:\\.\\d+)+)`).exec(text);
  const version = r.error || r.signal || !m ? null : `${tool} ${m[1]}`;
  versions.set(key, version);
  return version;
}

/** Whether the tool is on the PATH (or `searchPath`) and runs. */
export function available(tool: Tool, searchPath?: string): boolean {
  return toolVersion(tool, searchPath) !== null;
}

const TOOL_OF: Record<'kv' | 'http', Tool> = { kv: 'redis-benchmark', http: 'wrk' };

/**
 * The client to use: the requested one, or 'builtin' when the tool is missing (with the
 * reason). `auto` is redis-benchmark for kv and wrk for http when installed. `searchPath`
 * replaces the PATH the tools are looked up on.
 */
export function pickClient(
  app: 'kv' | 'http',
  wanted: ClientKind | 'auto',
  searchPath?: string,
): { kind: ClientKind; note?: string } {
  if (wanted === 'builtin') return { kind: 'builtin' };
  const tool = wanted === 'auto' ? TOOL_OF[app] : wanted;
  if (TOOL_OF[app] !== tool) throw new RangeError(`client ${tool} cannot load the ${app} app`);
  if (available(tool, searchPath)) return { kind: tool };
  return { kind: 'builtin', note: `${tool} is not installed or does not run; using the built-in client` };
}

export function startClient(kind: ClientKind, o: ClientOptions): ClientRun {
  const connections = o.connections ?? 16;
  if (!(Number.isInteger(connections) && connections >= 1))
    throw new RangeError(`connections: ${connections} must be a whole number ≥ 1`);
  parseEndpoint(o.address);
  const opts = { ...o, connections };
  if (kind === 'builtin') return o.app === 'kv' ? startBuiltinKv(opts) : startBuiltinHttp(opts);
  if (TOOL_OF[o.app] !== kind) throw new RangeError(`client ${kind} cannot load the ${o.app} app`);
  return kind === 'redis-benchmark' ? startRedisBenchmark(opts) : startWrk(opts);
}

// ---------------------------------------------------------------------------------------
// Built-in clients

/** Why a TCP connection to `address` cannot be opened now, or undefined if it can. */
function connectProblem(address: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = net.connect(parseEndpoint(address));
    const done = (why: string | undefined) => {
      clearTimeout(timer);
      s.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done('connecting timed out'), CONNECT_TIMEOUT_MS);
    s.once('connect', () => done(undefined));
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message));
  });
}

function startBuiltinKv(o: ClientOptions): ClientRun {
  const run = startLoad({
    endpoint: o.address,
    connections: o.connections,
    keys: o.keys ?? 5000,
    valueBytes: o.valueBytes ?? 1000,
    setRatio: 0.5,
    durationMs: 3_600_000,
    seed: o.seed,
  });
  let result: Promise<ClientResult> | undefined;
  const finish = async (r: LoadResult): Promise<ClientResult> => {
    let errors = r.errors + r.lost + r.timeouts + r.staleReads;
    let firstError = r.firstError ?? r.staleExamples[0];
    // every connection sends as soon as it opens: if none ever did, say why
    const why = r.sent === 0 ? await connectProblem(o.address) : undefined;
    if (why !== undefined) {
      errors++;
      firstError ??= `cannot connect to ${o.address}: ${why}`;
    }
    const { p50, p99, max } = r.latencyMs;
    return {
      client: 'builtin',
      tool: 'built-in RESP client',
      requests: r.completed,
      errors,
      connectionsLost: r.reconnects,
      ...(firstError === undefined ? {} : { firstError }),
      throughput: r.throughput,
      latencyMs: { p50, p99, max },
      output:
        `${r.completed} commands (${r.sets} SET, ${r.gets} GET) in ${Math.round(r.durationMs)} ms, ` +
        `${Math.round(r.opsPerSec)}/s; ${r.errors} error replies, ${r.lost} lost, ${r.timeouts} timeouts, ` +
        `${r.staleReads} stale reads, ${r.reconnects} reconnects, ${r.retries} retries` +
        r.staleExamples.map((e) => `\n${e}`).join(''),
    };
  };
  return {
    kind: 'builtin',
    progress: () => ({ requests: run.progress().completed }),
    stop() {
      if (!result) {
        run.stop();
        result = run.done.then(finish);
      }
      return result;
    },
  };
}

/** Per-bin throughput [tMs, ops per second] of completions at `doneAt` (ms since start). */
function throughputBins(doneAt: number[], durationMs: number): [number, number][] {
  const counts = new Array<number>(Math.max(1, Math.ceil(durationMs / BIN_MS))).fill(0);
  for (const t of doneAt) counts[Math.min(counts.length - 1, Math.floor(t / BIN_MS))]++;
  return counts.map((n, b) => [b * BIN_MS, (n * 1000) / BIN_MS]);
}

function startBuiltinHttp(o: ClientOptions): ClientRun {
  const { host, port } = parseEndpoint(o.address);
  const objects = o.objects ?? HTTP_OPTIONS.objects;
  const counters = o.counters ?? HTTP_OPTIONS.counters;
  const rng = seededRandom(o.seed ?? 1);
  const startedAt = now();
  const doneAt: number[] = [];
  const latencies: number[] = [];
  const s = { requests: 0, errors: 0, lost: 0, timeouts: 0, connectFailures: 0, non2xx: 0 };
  let firstError: string | undefined;
  let stopping = false;
  let running = o.connections;
  let resolveDone!: (r: ClientResult) => void;
  const done = new Promise<ClientResult>((r) => {
    resolveDone = r;
  });
  const fail = (why: string) => {
    s.errors++;
    firstError ??= why;
  };

  class Connection {
    private socket: net.Socket | undefined;
    private connected = false;
    /** The socket is being closed on purpose (timeout, bad response, `Connection: close`). */
    private closing = false;
    private openedAt = 0;
    private inflight: { what: string; sentAt: number } | undefined;
    private head: Buffer | undefined;
    /** Body bytes still to come, or -1 while reading a head. */
    private bodyLeft = -1;
    private status = 0;
    private closeAfter = false;
    private backoffMs = 5;
    private finished = false;
    private lastError: string | undefined;

    open(): void {
      if (this.finished) return;
      if (stopping) {
        this.finish();
        return;
      }
      const sock = net.connect({ host, port });
      this.socket = sock;
      this.connected = false;
      this.closing = false;
      this.openedAt = now();
      this.head = undefined;
      this.bodyLeft = -1;
      sock.setNoDelay(true);
      sock.once('connect', () => {
        if (this.socket !== sock) return;
        this.connected = true;
        this.send();
      });
      sock.on('data', (chunk: Buffer) => {
        if (this.socket === sock) this.data(chunk);
      });
      sock.on('error', (e: NodeJS.ErrnoException) => {
        if (this.socket === sock) this.lastError = e.code ?? e.message;
      });
      sock.on('close', () => {
        if (this.socket === sock) this.closed();
      });
    }

    private send(): void {
      if (stopping) {
        this.finish();
        return;
      }
      let what: string;
      let request: string;
      if (rng() < 0.9) {
        what = `GET /obj/${Math.floor(rng() * objects)}`;
        request = `${what} HTTP/1.1\r\nHost: ${o.address}\r\n\r\n`;
      } else {
        what = `POST /hit/${Math.floor(rng() * counters)}`;
        request = `${what} HTTP/1.1\r\nHost: ${o.address}\r\nContent-Length: 0\r\n\r\n`;
      }
      this.inflight = { what, sentAt: now() };
      this.socket!.write(request, 'latin1');
    }

    private data(chunk: Buffer): void {
      let rest = chunk;
      while (rest.length > 0 && !this.finished) {
        if (!this.inflight) {
          this.abandon(`${o.address} sent bytes nobody asked for`);
          return;
        }
        if (this.bodyLeft < 0) {
          const buf: Buffer = this.head ? Buffer.concat([this.head, rest]) : rest;
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) {
            if (buf.length > 16 * 1024) {
              this.abandon(`${o.address} sent a response head over 16 KiB`);
              return;
            }
            this.head = buf;
            return;
          }
          this.head = undefined;
          const text = buf.toString('latin1', 0, end);
          const status = /^HTTP\/1\.[01] (\d{3})/.exec(text);
          const length = /\r\ncontent-length:[ \t]*(\d+)[ \t]*(?:\r\n|$)/i.exec(text);
          if (!status || !length) {
            this.abandon(`${this.inflight.what}: a response without a status or Content-Length`);
            return;
          }
          this.status = Number(status[1]);
          this.closeAfter = /\r\nconnection:[ \t]*close/i.test(text);
          this.bodyLeft = Number(length[1]);
          rest = buf.subarray(end + 4);
        }
        const take = Math.min(this.bodyLeft, rest.length);
        this.bodyLeft -= take;
        rest = rest.subarray(take);
        if (this.bodyLeft === 0) {
          this.bodyLeft = -1;
          this.complete();
          if (this.closeAfter) {
            this.abandon(undefined);
            return;
          }
          if (this.finished) return;
          this.send();
        }
      }
    }

    private complete(): void {
      const c = this.inflight!;
      this.inflight = undefined;
      this.backoffMs = 5;
      const t = now();
      s.requests++;
      doneAt.push(t - startedAt);
      latencies.push(t - c.sentAt);
      if (this.status < 200 || this.status > 299) {
        s.non2xx++;
        fail(`${c.what} answered ${this.status}`);
      }
    }

    /** Closes the socket on purpose (an error already counted, or `why` to count). */
    private abandon(why: string | undefined): void {
      if (why !== undefined) fail(why);
      this.inflight = undefined;
      this.closing = true;
      this.socket?.destroy();
    }

    private closed(): void {
      this.socket = undefined;
      if (this.finished) return;
      if (!this.connected) {
        s.connectFailures++;
        fail(`cannot connect to ${o.address}: ${this.lastError ?? 'closed'}`);
      } else if (!this.closing) {
        s.lost++;
        fail(
          `connection to ${o.address} lost${this.inflight ? ` during ${this.inflight.what}` : ''}: ` +
            `${this.lastError ?? 'closed by the server'}`,
        );
      }
      this.inflight = undefined;
      this.lastError = undefined;
      if (stopping) {
        this.finish();
        return;
      }
      const pause = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, 100);
      setTimeout(() => this.open(), pause);
    }

    watchdog(t: number): void {
      if (this.finished || !this.socket) return;
      if (!this.connected && t - this.openedAt > CONNECT_TIMEOUT_MS) {
        this.lastError = `no answer within ${CONNECT_TIMEOUT_MS} ms`;
        this.socket.destroy();
      } else if (this.inflight && t - this.inflight.sentAt > HTTP_TIMEOUT_MS) {
        s.timeouts++;
        this.abandon(`${this.inflight.what}: no response within ${HTTP_TIMEOUT_MS} ms`);
      }
    }

    /** Done: nothing in flight, or stopping while idle. */
    finishIfIdle(): void {
      if (!this.inflight && this.connected && this.socket) this.finish();
    }

    private finish(): void {
      if (this.finished) return;
      this.finished = true;
      this.closing = true;
      this.socket?.destroy();
      this.socket = undefined;
      if (--running === 0) end();
    }
  }

  const conns = Array.from({ length: o.connections }, () => new Connection());
  const watchdog = setInterval(() => {
    const t = now();
    for (const c of conns) c.watchdog(t);
  }, 50);
  let stoppedAt = 0;

  function end(): void {
    clearInterval(watchdog);
    const durationMs = (stoppedAt || now()) - startedAt;
    const { p50, p99, max } = percentiles(latencies);
    resolveDone({
      client: 'builtin',
      tool: 'built-in HTTP client',
      requests: s.requests,
      errors: s.errors,
      connectionsLost: s.lost,
      ...(firstError === undefined ? {} : { firstError }),
      throughput: throughputBins(doneAt, durationMs),
      latencyMs: { p50, p99, max },
      output:
        `${s.requests} requests in ${Math.round(durationMs)} ms, ` +
        `${Math.round((s.requests * 1000) / Math.max(1, durationMs))}/s; ${s.non2xx} non-2xx, ` +
        `${s.lost} connections lost, ${s.connectFailures} failed connects, ${s.timeouts} timeouts`,
    });
  }

  for (const c of conns) c.open();
  return {
    kind: 'builtin',
    progress: () => ({ requests: s.requests }),
    stop() {
      if (!stopping) {
        stopping = true;
        stoppedAt = now();
        // a connection with a request in flight finishes when its response comes (or times out),
        // one waiting to reconnect at its next attempt
        for (const c of conns) c.finishIfIdle();
      }
      return done;
    },
  };
}

// ---------------------------------------------------------------------------------------
// External tools

// what to undo if this process exits while tools still run
const children = new Set<ChildProcess>();
const folders = new Set<string>();
const cleanUp = () => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of folders) rmSync(d, { recursive: true, force: true });
};
const holding = () => children.size + folders.size > 0;

function hold(what: { child?: ChildProcess; folder?: string }): void {
  if (!holding()) process.on('exit', cleanUp);
  if (what.child) children.add(what.child);
  if (what.folder) folders.add(what.folder);
}

function release(what: { child?: ChildProcess; folder?: string }): void {
  if (what.child) children.delete(what.child);
  if (what.folder) {
    rmSync(what.folder, { recursive: true, force: true });
    folders.delete(what.folder);
  }
  if (!holding()) process.off('exit', cleanUp);
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** It could not be started. */
  error?: string;
}

interface Spawned {
  /** Resolves once it has exited and its output has been read. */
  closed: Promise<Exit>;
  /** It exited while still wanted. */
  exitedEarly(): boolean;
  running(): boolean;
  /** SIGKILL, now (it counts as exiting early). */
  kill(): void;
  /** SIGINT, then SIGKILL after a grace period; resolves once it has exited. */
  terminate(): Promise<Exit>;
}

/** Starts a tool; its stdout and stderr go to the callbacks as they come. */
function launch(
  cmd: string,
  args: string[],
  onStdout: (text: string) => void,
  onStderr: (text: string) => void,
): Spawned {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  hold({ child });
  let wanted = true;
  let early = false;
  const forget = () => {
    if (!children.has(child)) return;
    if (wanted) early = true;
    release({ child });
  };
  child.stdout!.setEncoding('utf8').on('data', onStdout);
  child.stderr!.setEncoding('utf8').on('data', onStderr);
  const closed = new Promise<Exit>((resolve) => {
    child.once('exit', forget);
    child.once('error', (e) => {
      forget();
      resolve({ code: null, signal: null, error: `${cmd}: ${e.message}` });
    });
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  return {
    closed,
    exitedEarly: () => early,
    running: () => children.has(child),
    kill: () => child.kill('SIGKILL'),
    async terminate() {
      wanted = false;
      if (children.has(child)) {
        const hard = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
        child.kill('SIGINT');
        await closed;
        clearTimeout(hard);
      }
      return closed;
    },
  };
}

/** Splits a stream into lines (at \n or \r), keeping an unfinished one for the next chunk. */
function lineSplitter(onLine: (line: string) => void): (text: string) => void {
  let rest = '';
  return (text: string) => {
    const parts = (rest + text).split(/[\r\n]/);
    rest = parts.pop()!;
    for (const p of parts) {
      const line = p.trim();
      if (line) onLine(line);
    }
  };
}

/** The last lines of a tool's output. */
class Tail {
  private lines: string[] = [];
  add(line: string): void {
    this.lines.push(line);
    if (this.lines.length > OUTPUT_LINES) this.lines.shift();
  }
  toString(): string {
    return this.lines.join('\n');
  }
}

const ERROR_LINE = /error|reset|closed|refused|timeout/i;
const LOST_LINE = /reset|closed|broken pipe/i;
const RB_PROGRESS = /^([A-Za-z_ -]+): rps=(-?nan|[\d.]+) \(overall: (-?nan|[\d.]+)\)/;
/** How often redis-benchmark redraws its progress line (ms). */
const RB_TICK_MS = 250;
/** Silence after which a redis-benchmark process is taken for stuck (ms). */
const RB_STALL_MS = 2000;
const RB_SUMMARY = /^([A-Za-z_ -]+): ([\d.]+) requests per second/;

/**
 * What one redis-benchmark process printed: its requests (counted from the progress lines,
 * see the module comment), error lines, and a tail of the output.
 */
export class RedisBenchmarkOutput {
  testsDone = 0;
  errors = 0;
  lost = 0;
  firstError: string | undefined;
  /** When the current test printed its first progress line (ms), or -1 between tests. */
  private testStart = -1;
  private overall = 0;
  private instant = 0;
  private lastAt = 0;
  /** When it last printed a progress line, or started (ms). */
  private heardAt: number;
  private lastProgress = '';
  private readonly tail = new Tail();

  constructor(
    readonly requestsPerTest: number,
    startedAt = 0,
  ) {
    this.heardAt = startedAt;
  }

  line(text: string, at: number): void {
    const p = RB_PROGRESS.exec(text);
    if (p) {
      if (this.testStart < 0) this.testStart = at;
      this.instant = Number(p[2]) || 0;
      this.overall = Number(p[3]) || 0;
      this.lastAt = at;
      this.heardAt = at;
      this.lastProgress = text;
      return;
    }
    if (RB_SUMMARY.test(text)) {
      this.testsDone++;
      this.testStart = -1;
      this.overall = 0;
      this.instant = 0;
    } else if (ERROR_LINE.test(text)) {
      this.errors++;
      this.firstError ??= text;
      if (LOST_LINE.test(text)) this.lost++;
    }
    this.tail.add(text);
  }

  /** How long it has printed no progress line, at `at` (ms). */
  silentFor(at: number): number {
    return at - this.heardAt;
  }

  /**
   * It went quiet: redis-benchmark 7.0 spins at full CPU, printing nothing more, when a write
   * to a broken connection fails (and when it cannot connect at the start), where a failed
   * read makes it exit. Counted as an error and a lost connection.
   */
  stalled(silentMs: number): void {
    const why =
      `redis-benchmark printed no progress for ${Math.round(silentMs)} ms ` +
      '(it spins after a failed write, e.g. on a lost connection); killed';
    this.errors++;
    this.lost++;
    this.firstError ??= why;
    this.tail.add(why);
  }

  /**
   * Requests completed by the latest progress line, estimated; with `at` (ms), carried on to
   * then at the last interval's rate (for at most one more interval).
   */
  requests(at?: number): number {
    let n = this.testsDone * this.requestsPerTest;
    if (this.testStart >= 0) {
      n += (this.overall * (this.lastAt - this.testStart)) / 1000;
      if (at !== undefined) n += (this.instant * Math.min(RB_TICK_MS, Math.max(0, at - this.lastAt))) / 1000;
    }
    return Math.round(n);
  }

  output(): string {
    const t = this.tail.toString();
    return this.lastProgress ? `${t}${t ? '\n' : ''}${this.lastProgress}` : t;
  }
}

function startRedisBenchmark(o: ClientOptions): ClientRun {
  const { host, port } = parseEndpoint(o.address);
  const keys = o.keys ?? 5000;
  const valueBytes = o.valueBytes ?? 1000;
  const tool = toolVersion('redis-benchmark') ?? 'redis-benchmark';
  // SET and GET side by side, each on half of the connections (one process alternates tests)
  const plan: [string, number][] =
    o.connections === 1
      ? [['set,get', 1]]
      : [
          ['set', Math.ceil(o.connections / 2)],
          ['get', Math.floor(o.connections / 2)],
        ];
  const procs = plan.map(([tests, c]) => {
    const out = new RedisBenchmarkOutput(RB_REQUESTS, now());
    const feed = lineSplitter((line) => out.line(line, now()));
    const args = [
      ...['-h', host, '-p', String(port), '-c', String(c), '-r', String(keys), '-d', String(valueBytes)],
      ...['-t', tests, '-n', String(RB_REQUESTS), '-l', '-q'],
    ];
    const spawned = launch('redis-benchmark', args, feed, feed);
    return { args, out, spawned };
  });
  const watchdog = setInterval(() => {
    const t = now();
    for (const p of procs)
      if (p.spawned.running() && p.out.silentFor(t) > RB_STALL_MS) {
        p.out.stalled(p.out.silentFor(t));
        p.spawned.kill();
      }
  }, RB_TICK_MS);
  let result: Promise<ClientResult> | undefined;
  const stop = async (): Promise<ClientResult> => {
    clearInterval(watchdog);
    const stoppedAt = now();
    const early = procs.map((p) => p.spawned.exitedEarly());
    await Promise.all(procs.map((p) => p.spawned.terminate()));
    let requests = 0;
    let errors = 0;
    let lost = 0;
    let firstError: string | undefined;
    const output: string[] = [];
    for (const [i, p] of procs.entries()) {
      const exit = await p.spawned.closed;
      // one that died of an error stopped at some point after its last line
      requests += early[i] ? p.out.requests() : p.out.requests(stoppedAt);
      let e = p.out.errors;
      let why = p.out.firstError;
      if (early[i] || exit.error) {
        why ??= exit.error ?? `redis-benchmark exited by itself (status ${exit.code ?? exit.signal})`;
        e = Math.max(e, 1);
      }
      errors += e;
      lost += p.out.lost;
      firstError ??= why;
      output.push(`$ redis-benchmark ${p.args.join(' ')}\n${p.out.output()}`);
    }
    return {
      client: 'redis-benchmark',
      tool,
      requests,
      errors,
      connectionsLost: lost,
      ...(firstError === undefined ? {} : { firstError }),
      throughput: [],
      output: output.join('\n'),
    };
  };
  return {
    kind: 'redis-benchmark',
    progress: () => ({ requests: procs.reduce((n, p) => n + p.out.requests(), 0) }),
    stop() {
      result ??= stop();
      return result;
    },
  };
}

/** What wrk's summary says; undefined fields when it did not print one. */
export interface WrkSummary {
  requests?: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  non2xx: number;
  latencyMs?: { p50: number; p99: number; max: number };
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const toMs = (v: string, unit: string) => Number(v) * UNIT_MS[unit];

/** Parses the summary wrk prints when it ends (with `--latency`). */
export function parseWrkSummary(text: string): WrkSummary {
  const requests = /^\s*(\d+) requests in /m.exec(text);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const dur = '([\\d.]+)(us|ms|s|m|h)\\b';
  const latency = new RegExp(`^\\s*Latency\\s+${dur}\\s+${dur}\\s+${dur}`, 'm').exec(text);
  const pct = (p: number) => {
    const m = new RegExp(`^\\s*${p}%\\s+${dur}`, 'm').exec(text);
    return m ? toMs(m[1], m[2]) : undefined;
  };
  const p50 = pct(50);
  const p99 = pct(99);
  return {
    ...(requests ? { requests: Number(requests[1]) } : {}),
    socketErrors: {
      connect: Number(se?.[1] ?? 0),
      read: Number(se?.[2] ?? 0),
      write: Number(se?.[3] ?? 0),
      timeout: Number(se?.[4] ?? 0),
    },
    non2xx: Number(non2xx?.[1] ?? 0),
    ...(latency && p50 !== undefined && p99 !== undefined
      ? { latencyMs: { p50, p99, max: toMs(latency[5], latency[6]) } }
      : {}),
  };
}

const WRK_PROGRESS = /^ferry-progress (\d+) (\d+)$/;

/** The request mix for wrk: 90% GET /obj/<i>, 10% POST /hit/<k>; a running count on stderr. */
function wrkScript(objects: number, counters: number, seed: number): string {
  return `-- ferry: the http app's request mix
local objects, counters, seed = ${objects}, ${counters}, ${seed}
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local sent = 0
function init(args)
  math.randomseed(seed * 1000 + tid)
end
function request()
  sent = sent + 1
  if sent % 100 == 0 then io.stderr:write("ferry-progress " .. tid .. " " .. sent .. "\\n") end
  if math.random() < 0.9 then
    return wrk.format("GET", "/obj/" .. math.random(0, objects - 1))
  end
  return wrk.format("POST", "/hit/" .. math.random(0, counters - 1), nil, "")
end
`;
}

function startWrk(o: ClientOptions): ClientRun {
  const { host, port } = parseEndpoint(o.address);
  const tool = toolVersion('wrk') ?? 'wrk';
  const dir = mkdtempSync(join(tmpdir(), 'ferry-wrk-'));
  hold({ folder: dir });
  const script = join(dir, 'mix.lua');
  writeFileSync(
    script,
    wrkScript(o.objects ?? HTTP_OPTIONS.objects, o.counters ?? HTTP_OPTIONS.counters, o.seed ?? 1),
  );
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
  const threads = Math.min(2, o.connections);
  const args = [
    ...['-t', String(threads), '-c', String(o.connections), '-d', '3600s', '--timeout', '5s'],
    ...['--latency', '-s', script, url],
  ];
  let stdout = '';
  const stderr = new Tail();
  const sent = new Map<string, number>();
  const spawned = launch(
    'wrk',
    args,
    (text) => {
      stdout += text;
    },
    lineSplitter((line) => {
      const m = WRK_PROGRESS.exec(line);
      if (m) sent.set(m[1], Number(m[2]));
      else stderr.add(line);
    }),
  );
  const counted = () => [...sent.values()].reduce((a, b) => a + b, 0);
  let result: Promise<ClientResult> | undefined;
  const stop = async (): Promise<ClientResult> => {
    const early = spawned.exitedEarly();
    await spawned.terminate();
    release({ folder: dir });
    const exit = await spawned.closed;
    const s = parseWrkSummary(stdout);
    const { connect, read, write, timeout } = s.socketErrors;
    let errors = connect + read + write + timeout + s.non2xx;
    let firstError: string | undefined;
    if (connect) firstError = `${connect} failed connects`;
    else if (read + write) firstError = `${read + write} connections lost (read ${read}, write ${write})`;
    else if (timeout) firstError = `${timeout} requests timed out`;
    else if (s.non2xx) firstError = `${s.non2xx} responses not 2xx or 3xx`;
    if (early || exit.error || s.requests === undefined) {
      errors = Math.max(errors, 1);
      const said = stderr.toString().split('\n')[0];
      const how = `status ${exit.code ?? exit.signal}`;
      firstError ??=
        exit.error ??
        (early ? `wrk exited by itself (${how})` : `wrk printed no summary (${how})`) +
          (said ? `: ${said}` : '');
    }
    return {
      client: 'wrk',
      tool,
      requests: s.requests ?? counted(),
      errors,
      connectionsLost: read + write,
      ...(firstError === undefined ? {} : { firstError }),
      throughput: [],
      ...(s.latencyMs ? { latencyMs: s.latencyMs } : {}),
      output: `$ wrk ${args.join(' ')}\n${stdout.trim()}${stderr.toString() ? `\n${stderr}` : ''}`,
    };
  };
  return {
    kind: 'wrk',
    progress: () => ({ requests: counted() }),
    stop() {
      result ??= stop();
      return result;
    },
  };
}
