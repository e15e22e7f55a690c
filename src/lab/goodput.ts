// What a shaped link really carries: one TCP connection between two lab hosts, timed at
// the receiver from its first byte to its last, and what it keeps queued in the sender's
// uplink meanwhile: small echoes from the root namespace (where the switch runs) to the
// sender, their replies behind the flow, against the same echoes before it. The
// simulator's twin of a lab run takes the goodput as its network efficiency (goodput ÷
// line rate) and the queue as its hosts' uplink queue, measured once, not per run.

import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { inNetns } from './lab.ts';

export interface LabEnd {
  netns: string;
  ip: string;
}

export interface Goodput {
  bytes: number;
  seconds: number;
  mbps: number;
  /** The median echo's round trip behind the flow less before it (µs; 0 if none came back). */
  queueUs: number;
}

// the receiver: listens, times the transfer and prints it as JSON
const RECEIVER = `
const net = require('node:net');
const server = net.createServer((c) => {
  let bytes = 0, first = 0, t0 = 0, t1 = 0;
  c.on('data', (d) => {
    const now = performance.now();
    if (!t0) { t0 = now; first = d.length; }
    t1 = now;
    bytes += d.length;
  });
  c.on('end', () => {
    console.log(JSON.stringify({ bytes, timed: bytes - first, seconds: (t1 - t0) / 1000 }));
    server.close();
  });
});
server.listen(Number(process.argv[2]), process.argv[1], () => console.log('ready'));
`;

// the sender: echoes on its own address, then, on "go" from its stdin, writes its bytes
// as fast as the connection takes them and ends
const SENDER = `
const net = require('node:net');
const total = Number(process.argv[3]);
const chunk = Buffer.alloc(1 << 20, 7);
const echo = net.createServer((e) => { e.setNoDelay(true); e.on('data', (d) => e.write(d)); e.on('error', () => {}); });
echo.listen(Number(process.argv[5]), process.argv[4], () => console.log('ready'));
process.stdin.once('data', () => {
  const c = net.connect(Number(process.argv[2]), process.argv[1], () => {
    let sent = 0;
    const pump = () => {
      while (sent < total) {
        const n = Math.min(chunk.length, total - sent);
        sent += n;
        if (!c.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return c.once('drain', pump);
      }
      c.end();
    };
    pump();
  });
});
`;

function node(end: { netns: string }, script: string, args: string[]): ChildProcess {
  const { file, args: argv } = inNetns(end.netns, [process.execPath, '-e', script, ...args]);
  return spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
}

/**
 * Echo round trips to `ip:port`, one every 2 ms, until `until` settles (or the connection
 * fails): when each was sent, and its µs.
 */
async function echoes(
  ip: string,
  port: number,
  until: Promise<unknown>,
): Promise<{ at: number; us: number }[]> {
  let done = false;
  const over = until.then(
    () => (done = true),
    () => (done = true),
  );
  const rtts: { at: number; us: number }[] = [];
  const c = connect(port, ip);
  c.setNoDelay(true);
  c.on('error', () => undefined); // between echoes too: the next one then fails
  const msg = Buffer.alloc(40, 1);
  try {
    // a connection that never opens (a firewall dropping it) ends with `until` too
    await Promise.race([once(c, 'connect'), over]);
    while (!done) {
      const at = performance.now();
      const back = once(c, 'data');
      c.write(msg);
      await Promise.race([back, over]);
      if (done) break;
      rtts.push({ at, us: (performance.now() - at) * 1000 });
      await new Promise((r) => setTimeout(r, 2));
    }
  } catch {
    // a failed echo costs only the queue's measurement
  } finally {
    c.destroy();
  }
  return rtts;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : 0;
}

function lineFrom(child: ChildProcess, pattern: RegExp, timeoutMs: number, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(
      () => reject(new Error(`${what}: nothing within ${timeoutMs / 1000} s`)),
      timeoutMs,
    );
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const line = out.split('\n').find((l) => pattern.test(l));
      if (line) {
        clearTimeout(timer);
        resolve(line);
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      err += d;
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (status ${code})${err ? `: ${err.trim().split('\n').at(-1)}` : ''}`));
    });
  });
}

/** How long the echoes run before the flow starts, and after its start before they count. */
const IDLE_MS = 300;
const RAMP_MS = 100;

/**
 * Sends `bytes` from `from` to `to` over one TCP connection on `port`: what arrived, how
 * fast, and how long echoes from here to the sender (on `port` + 1) waited behind it.
 */
export async function measureGoodput(from: LabEnd, to: LabEnd, bytes: number, port = 9199): Promise<Goodput> {
  const receiver = node(to, RECEIVER, [to.ip, String(port)]);
  let sender: ChildProcess | undefined;
  try {
    await lineFrom(receiver, /^ready/, 5_000, 'the goodput receiver');
    const result = lineFrom(receiver, /^\{/, 60_000, 'the goodput receiver');
    sender = node(from, SENDER, [to.ip, String(port), String(bytes), from.ip, String(port + 1)]);
    await lineFrom(sender, /^ready/, 5_000, 'the goodput sender');
    const idle = await echoes(from.ip, port + 1, new Promise((r) => setTimeout(r, IDLE_MS)));
    sender.stdin!.write('go\n');
    const full = performance.now() + RAMP_MS;
    const loaded = echoes(from.ip, port + 1, result);
    const m = JSON.parse(await result) as { bytes: number; timed: number; seconds: number };
    if (m.bytes !== bytes) throw new Error(`the goodput receiver got ${m.bytes} of ${bytes} bytes`);
    // the echoes once the flow has filled the link's buffer
    const behind = (await loaded).filter((e) => e.at >= full).map((e) => e.us);
    const before = idle.map((e) => e.us);
    const queueUs = before.length && behind.length ? Math.max(0, median(behind) - median(before)) : 0;
    return { bytes: m.bytes, seconds: m.seconds, mbps: (m.timed * 8) / m.seconds / 1e6, queueUs };
  } finally {
    receiver.kill();
    sender?.kill();
  }
}
