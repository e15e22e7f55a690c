// The external tools as clients: `redis-benchmark` for kv and `wrk` for http, found on the
// PATH, run as child processes and read from their output (how each counts: see
// clients.ts). Child processes are killed (and wrk's script removed) on stop() and, should
// the caller never stop them, when this process exits.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HTTP_OPTIONS } from '../apps/http.ts';
import { parseEndpoint } from '../host/loadgen.ts';
import type { ClientOptions, ClientResult, ClientRun } from './clients.ts';

export type Tool = 'redis-benchmark' | 'wrk';

/** Requests per redis-benchmark test: far more than a run lasts (≈100 s at 20,000 per second). */
const RB_REQUESTS = 2_000_000;
const KILL_GRACE_MS = 5000;
const OUTPUT_LINES = 30;
const now = () => performance.now();

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

export function startRedisBenchmark(o: ClientOptions): ClientRun {
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

export function startWrk(o: ClientOptions): ClientRun {
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
