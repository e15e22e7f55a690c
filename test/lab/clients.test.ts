// The clients that load a VM: each one, built-in and external, against a real kv or http VM
// behind the virtual switch on loopback, counted against what the VM says it served; each
// against an address where nothing listens; the fall-back when a tool is missing; the
// parsers of the tools' output.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { call, type VmInfo } from '../../src/host/api.ts';
import {
  available,
  type ClientKind,
  type ClientResult,
  type ClientRun,
  parseWrkSummary,
  pickClient,
  RedisBenchmarkOutput,
  startClient,
} from '../../src/lab/clients.ts';
import { type Cluster, startLoopback } from '../../src/lab/loopback.ts';

/** Each app with each client that can drive it. */
const PAIRS: ['kv' | 'http', ClientKind][] = [
  ['kv', 'builtin'],
  ['kv', 'redis-benchmark'],
  ['http', 'builtin'],
  ['http', 'wrk'],
];

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const RUN_MS = 1500;

/** redis-benchmark and wrk processes still running: [pid, parent pid, name]. */
function toolsRunning(): [number, number, string][] {
  const found: [number, number, string][] = [];
  for (const pid of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const m = /^\d+ \((.*)\) (\S+) (\d+)/.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'));
      // a zombie has exited (it waits for its parent, or for init, to reap it)
      if (m && /^(redis-benchmark|wrk)$/.test(m[1]) && m[2] !== 'Z')
        found.push([Number(pid), Number(m[3]), m[1]]);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** The tools running as children of `parent`. */
const toolsOf = (parent: number) => toolsRunning().filter(([, ppid]) => ppid === parent);
const toolChildren = () => toolsOf(process.pid);

/** stop(), failing instead of waiting forever. */
async function stopWithin(run: ClientRun, ms: number): Promise<ClientResult> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${run.kind}: stop() did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([run.stop(), late]);
  } finally {
    clearTimeout(timer);
  }
}

function summary(r: ClientResult): string {
  const lat = r.latencyMs ? ` p50 ${r.latencyMs.p50.toFixed(2)} ms p99 ${r.latencyMs.p99.toFixed(2)} ms` : '';
  return (
    `${r.tool}: ${r.requests} requests, ${r.errors} errors, ${r.connectionsLost} lost${lat}` +
    (r.firstError ? ` (first: ${r.firstError})` : '')
  );
}

describe('clients against a VM behind the switch', () => {
  let cluster: Cluster;
  let host: string;
  const address: Record<'kv' | 'http', string> = { kv: '', http: '' };
  const NAMES = { kv: 'clients-kv', http: 'clients-http' };

  before(async () => {
    cluster = await startLoopback({ hosts: ['a'] });
    host = cluster.hosts[0].url;
    for (const app of ['kv', 'http'] as const) {
      const vm = await call<VmInfo>(host, cluster.secretHex, 'POST', '/v1/vms', {
        name: NAMES[app],
        ramMiB: 32,
        vcpus: 1,
        app,
      });
      address[app] = vm.endpoint;
    }
  });
  after(async () => {
    await cluster?.down();
  });

  const served = async (app: 'kv' | 'http'): Promise<number> => {
    const vms = await call<VmInfo[]>(host, cluster.secretHex, 'GET', '/v1/vms');
    const vm = vms.find((v) => v.name === NAMES[app]);
    assert.ok(vm?.clients, `VM ${NAMES[app]} reports no client counters: ${JSON.stringify(vm)}`);
    return vm.clients.served;
  };

  for (const [app, kind] of PAIRS) {
    test(`${app} / ${kind}: requests counted, no error, the VM served them`, async (t) => {
      const before = await served(app);
      const run = startClient(kind, { address: address[app], app, connections: 8, seed: 7 });
      assert.equal(run.kind, kind);
      await sleep(RUN_MS / 2);
      const midway = run.progress().requests;
      await sleep(RUN_MS / 2);
      const r = await stopWithin(run, 10_000);
      const grew = (await served(app)) - before;
      t.diagnostic(`${summary(r)}; progress midway ${midway}; the VM served ${grew}`);
      t.diagnostic(r.output.split('\n').slice(-6).join(' | '));

      assert.equal(r.client, kind);
      assert.match(
        r.tool,
        kind === 'builtin' ? /^built-in (RESP|HTTP) client$/ : /^(redis-benchmark|wrk) \d+\.\d+/,
      );
      assert.ok(midway > 0, 'progress() counts while the client runs');
      assert.ok(r.requests > 100, `only ${r.requests} requests in ${RUN_MS} ms`);
      assert.ok(r.requests >= midway, `${r.requests} requests at the end, ${midway} midway`);
      assert.equal(r.errors, 0, `errors: ${r.firstError}\n${r.output}`);
      assert.equal(r.connectionsLost, 0);
      assert.deepEqual(toolChildren(), [], 'no tool process is left running');
      if (kind === 'redis-benchmark') {
        // an estimate from its progress lines: close to what the VM served
        assert.ok(grew > 0, 'the VM served the requests');
        assert.ok(
          Math.abs(r.requests - grew) <= 0.25 * grew,
          `redis-benchmark counted ${r.requests} requests, the VM served ${grew}`,
        );
      } else if (kind === 'wrk') {
        // every response wrk counted was served; the VM may have answered the requests in
        // flight when wrk stopped, one per connection at most
        assert.ok(
          grew >= r.requests && grew <= r.requests + 8,
          `wrk counted ${r.requests} responses, the VM served ${grew}`,
        );
      } else {
        // stop() waits for the requests in flight: the counts agree
        assert.equal(grew, r.requests, 'the client counted every request the VM served');
      }
      if (kind === 'builtin') {
        const binned = r.throughput.reduce((n, [, perSec]) => n + (perSec * 100) / 1000, 0);
        assert.ok(r.throughput.length >= 10, `${r.throughput.length} throughput bins`);
        assert.equal(Math.round(binned), r.requests, 'the throughput bins hold every request');
        assert.deepEqual(
          r.throughput.slice(0, 3).map(([tMs]) => tMs),
          [0, 100, 200],
        );
      } else assert.deepEqual(r.throughput, []);
      if (kind !== 'redis-benchmark') {
        assert.ok(r.latencyMs, 'latency percentiles');
        assert.ok(
          r.latencyMs.p50 > 0 && r.latencyMs.p50 <= r.latencyMs.p99 && r.latencyMs.p99 <= r.latencyMs.max,
        );
      }
    });
  }

  test('a process that exits without stop() takes its tools with it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-clients-'));
    try {
      const script = join(dir, 'leave.mts');
      const clients = new URL('../../src/lab/clients.ts', import.meta.url).href;
      writeFileSync(
        script,
        [
          `import { startClient } from ${JSON.stringify(clients)};`,
          `startClient('redis-benchmark', { address: ${JSON.stringify(address.kv)}, app: 'kv', connections: 2 });`,
          `startClient('wrk', { address: ${JSON.stringify(address.http)}, app: 'http', connections: 2 });`,
          "console.log('started');",
          'setTimeout(() => process.exit(0), 500);',
        ].join('\n'),
      );
      const child = spawn(process.execPath, ['--import', 'tsx', script], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const exited = new Promise((r) => child.once('exit', r));
      await new Promise((r) => child.stdout!.once('data', r));
      await sleep(200);
      // redis-benchmark runs as two processes (SET and GET), wrk as one
      const tools = toolsOf(child.pid!);
      assert.deepEqual(
        tools.map(([, , name]) => name).sort(),
        ['redis-benchmark', 'redis-benchmark', 'wrk'],
        'the tools run',
      );
      const wrkScripts = () => readdirSync(tmpdir()).filter((n) => n.startsWith('ferry-wrk-'));
      const scripts = wrkScripts();
      const code = await exited;
      assert.equal(code, 0);
      assert.ok(scripts.filter((n) => !wrkScripts().includes(n)).length >= 1, "wrk's script was removed");
      await sleep(100);
      const pids = tools.map(([pid]) => pid);
      assert.deepEqual(
        toolsRunning().filter(([pid]) => pids.includes(pid)),
        [],
        'the tools were left running',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // a proxy in front of the VM resets every client connection once, 500 ms in
  for (const [app, kind] of PAIRS) {
    test(`${app} / ${kind}: connections reset under it are counted`, async (t) => {
      const proxy = await resettingProxy(address[app], 500);
      try {
        const run = startClient(kind, { address: proxy.address, app, connections: 4, seed: 3 });
        await sleep(500);
        await proxy.reset;
        const atReset = run.progress().requests;
        // redis-benchmark may go quiet after a failed write, for a while before it is taken as stuck
        await sleep(kind === 'redis-benchmark' ? 2600 : 600);
        const r = await stopWithin(run, 10_000);
        t.diagnostic(`${summary(r)}; ${proxy.resets()} connections reset at ${atReset} requests`);
        assert.ok(proxy.resets() >= 1, 'the proxy reset connections');
        assert.ok(atReset > 0, 'requests before the reset');
        assert.ok(r.connectionsLost >= 1, `no connection counted lost:\n${r.output}`);
        if (kind === 'builtin' && app === 'kv') {
          // the load generator reconnects and resends: a drop alone is no error
          assert.equal(r.errors, 0, r.firstError);
        } else {
          assert.ok(r.errors >= 1, `no error counted:\n${r.output}`);
          assert.match(r.firstError ?? '', /reset|lost|closed/i);
        }
        // all but redis-benchmark (which exits at the first lost connection) carry on
        if (kind !== 'redis-benchmark')
          assert.ok(r.requests > atReset + 100, `${r.requests} requests, ${atReset} at the reset`);
        assert.deepEqual(toolChildren(), [], 'no tool process is left running');
      } finally {
        await proxy.close();
      }
    });
  }
});

/** A TCP proxy to `target` that resets the client connections open `afterMs` after it starts. */
async function resettingProxy(
  target: string,
  afterMs: number,
): Promise<{ address: string; reset: Promise<void>; resets(): number; close(): Promise<void> }> {
  const [host, port] = [
    target.slice(0, target.lastIndexOf(':')),
    Number(target.slice(target.lastIndexOf(':') + 1)),
  ];
  const open = new Set<net.Socket>();
  const sockets = new Set<net.Socket>();
  let resets = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect({ host, port });
    sockets.add(client).add(upstream);
    open.add(client);
    client.on('error', () => {});
    upstream.on('error', () => {});
    client.pipe(upstream).pipe(client);
    const drop = () => {
      open.delete(client);
      sockets.delete(client);
      sockets.delete(upstream);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', drop);
    upstream.on('close', drop);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const reset = sleep(afterMs).then(() => {
    for (const c of open) {
      resets++;
      c.resetAndDestroy();
    }
  });
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    reset,
    resets: () => resets,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('a client pointed where nothing listens', () => {
  let dead: string;
  before(async () => {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    dead = `127.0.0.1:${(s.address() as net.AddressInfo).port}`;
    await new Promise<void>((r) => s.close(() => r()));
  });

  for (const [app, kind] of PAIRS) {
    test(`${app} / ${kind}: reports errors, does not hang`, async (t) => {
      const run = startClient(kind, { address: dead, app, connections: 4 });
      await sleep(400);
      const r = await stopWithin(run, 8000);
      t.diagnostic(summary(r));
      assert.equal(r.requests, 0);
      assert.ok(r.errors > 0, `no error reported:\n${r.output}`);
      assert.match(r.firstError ?? '', /connect|refused|exited/i);
      assert.deepEqual(toolChildren(), [], 'no tool process is left running');
    });
  }
});

describe('picking a client', () => {
  const empty = mkdtempSync(join(tmpdir(), 'ferry-path-'));
  after(() => rmSync(empty, { recursive: true, force: true }));

  test('auto takes the tool when it is installed', () => {
    assert.ok(available('redis-benchmark'), 'redis-benchmark (redis-tools) must be installed');
    assert.ok(available('wrk'), 'wrk must be installed');
    assert.deepEqual(pickClient('kv', 'auto'), { kind: 'redis-benchmark' });
    assert.deepEqual(pickClient('http', 'auto'), { kind: 'wrk' });
    assert.deepEqual(pickClient('http', 'builtin'), { kind: 'builtin' });
    assert.deepEqual(pickClient('kv', 'redis-benchmark'), { kind: 'redis-benchmark' });
  });

  test('a tool missing from the PATH, or one that does not run, falls back to builtin with a note', () => {
    const broken = mkdtempSync(join(empty, 'broken-'));
    for (const tool of ['wrk', 'redis-benchmark']) {
      writeFileSync(join(broken, tool), '#!/bin/sh\nexit 127\n');
      chmodSync(join(broken, tool), 0o755);
    }
    for (const path of [empty, broken]) {
      assert.equal(available('wrk', path), false);
      assert.equal(available('redis-benchmark', path), false);
      for (const [app, wanted] of [
        ['kv', 'auto'],
        ['kv', 'redis-benchmark'],
        ['http', 'auto'],
        ['http', 'wrk'],
      ] as const) {
        const p = pickClient(app, wanted, path);
        assert.equal(p.kind, 'builtin');
        assert.match(p.note ?? '', app === 'kv' ? /redis-benchmark/ : /wrk/);
      }
    }
  });

  test('a tool for the other app is refused', () => {
    assert.throws(() => pickClient('kv', 'wrk'), /wrk cannot load the kv app/);
    assert.throws(() => pickClient('http', 'redis-benchmark'), /redis-benchmark cannot load the http app/);
    assert.throws(
      () => startClient('wrk', { address: '127.0.0.1:1', app: 'kv', connections: 1 }),
      /wrk cannot load the kv app/,
    );
  });
});

describe("the tools' output", () => {
  test('wrk: requests, socket errors, non-2xx and latency from its summary', () => {
    const s = parseWrkSummary(
      [
        'Running 60m test @ http://127.0.0.1:32915/',
        '  2 threads and 16 connections',
        '  Thread Stats   Avg      Stdev     Max   +/- Stdev',
        '    Latency     2.53ms    2.89ms    1.02s    85.83%',
        '    Req/Sec     4.67k   734.44     6.67k    80.00%',
        '  Latency Distribution',
        '     50%  910.00us',
        '     75%    3.16ms',
        '     90%    6.66ms',
        '     99%   13.35ms',
        '  13985 requests in 1.51s, 139.80MB read',
        '  Socket errors: connect 1, read 2, write 3, timeout 4',
        '  Non-2xx or 3xx responses: 5',
        'Requests/sec:   9269.39',
      ].join('\n'),
    );
    assert.deepEqual(s, {
      requests: 13985,
      socketErrors: { connect: 1, read: 2, write: 3, timeout: 4 },
      non2xx: 5,
      latencyMs: { p50: 0.91, p99: 13.35, max: 1020 },
    });
    assert.deepEqual(parseWrkSummary('unable to connect to 127.0.0.1:1 Connection refused\n'), {
      socketErrors: { connect: 0, read: 0, write: 0, timeout: 0 },
      non2xx: 0,
    });
  });

  test('redis-benchmark: requests from finished tests and progress lines, error lines', () => {
    const o = new RedisBenchmarkOutput(1000);
    o.line('SET: rps=0.0 (overall: -nan) avg_msec=-nan (overall: -nan)', 0);
    o.line('SET: rps=2000.0 (overall: 2000.0) avg_msec=0.5 (overall: 0.5)', 250);
    assert.equal(o.requests(250), 500);
    // between lines, the last interval's rate carries on, for one interval at most
    assert.equal(o.requests(), 500);
    assert.equal(o.requests(350), 700);
    assert.equal(o.requests(1000), 1000);
    o.line('SET: 2000.00 requests per second, p50=0.487 msec', 500);
    assert.equal(o.requests(600), 1000);
    o.line('GET: rps=0.0 (overall: -nan) avg_msec=-nan (overall: -nan)', 600);
    o.line('GET: rps=4000.0 (overall: 4000.0) avg_msec=0.2 (overall: 0.2)', 850);
    assert.equal(o.requests(850), 2000);
    assert.equal(o.errors, 0);
    o.line('Error: Connection reset by peer', 900);
    assert.equal(o.errors, 1);
    assert.equal(o.lost, 1);
    assert.equal(o.firstError, 'Error: Connection reset by peer');
    assert.match(o.output(), /Connection reset by peer\nGET: rps=4000/);
    // a process that goes quiet is stuck
    assert.equal(o.silentFor(1850), 1000);
    o.stalled(2000);
    assert.equal(o.errors, 2);
    assert.equal(o.lost, 2);
    assert.equal(o.firstError, 'Error: Connection reset by peer');
  });
});
