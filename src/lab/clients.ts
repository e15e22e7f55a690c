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

import { parseEndpoint } from '../host/loadgen.ts';
import { startBuiltinHttp, startBuiltinKv } from './builtin-clients.ts';
import { available, startRedisBenchmark, startWrk, type Tool } from './tool-clients.ts';

export { available, parseWrkSummary, RedisBenchmarkOutput, type WrkSummary } from './tool-clients.ts';

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

// ---------------------------------------------------------------------------------------
// Which client

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
