// The built-in clients: the RESP load generator of loadgen.ts for kv, a closed-loop
// HTTP/1.1 keep-alive client for http (how each counts: see clients.ts).

import net from 'node:net';
import { HTTP_OPTIONS } from '../apps/http.ts';
import { percentiles } from '../engine/stats.ts';
import { type LoadResult, parseEndpoint, seededRandom, startLoad } from '../host/loadgen.ts';
import type { ClientOptions, ClientResult, ClientRun } from './clients.ts';

const BIN_MS = 100;
const HTTP_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 2000;
const now = () => performance.now();

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

export function startBuiltinKv(o: ClientOptions): ClientRun {
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

export function startBuiltinHttp(o: ClientOptions): ClientRun {
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
