// What a shaped link really carries: one TCP connection between two lab hosts, timed at
// the receiver from its first byte to its last. The simulator's twin of a lab run takes
// the result as its network efficiency (goodput ÷ line rate), measured once, not per run.

import { type ChildProcess, spawn } from 'node:child_process';
import { inNetns } from './lab.ts';

export interface LabEnd {
  netns: string;
  ip: string;
}

export interface Goodput {
  bytes: number;
  seconds: number;
  mbps: number;
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

// the sender: writes its bytes as fast as the connection takes them, then ends
const SENDER = `
const net = require('node:net');
const total = Number(process.argv[3]);
const chunk = Buffer.alloc(1 << 20, 7);
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
`;

function node(end: { netns: string }, script: string, args: string[]): ChildProcess {
  const { file, args: argv } = inNetns(end.netns, [process.execPath, '-e', script, ...args]);
  return spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
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

/** Sends `bytes` from `from` to `to` over one TCP connection on `port`; what arrived, how fast. */
export async function measureGoodput(from: LabEnd, to: LabEnd, bytes: number, port = 9199): Promise<Goodput> {
  const receiver = node(to, RECEIVER, [to.ip, String(port)]);
  let sender: ChildProcess | undefined;
  try {
    await lineFrom(receiver, /^ready/, 5_000, 'the goodput receiver');
    const result = lineFrom(receiver, /^\{/, 60_000, 'the goodput receiver');
    sender = node(from, SENDER, [to.ip, String(port), String(bytes)]);
    const m = JSON.parse(await result) as { bytes: number; timed: number; seconds: number };
    if (m.bytes !== bytes) throw new Error(`the goodput receiver got ${m.bytes} of ${bytes} bytes`);
    return { bytes: m.bytes, seconds: m.seconds, mbps: (m.timed * 8) / m.seconds / 1e6 };
  } finally {
    receiver.kill();
    sender?.kill();
  }
}
