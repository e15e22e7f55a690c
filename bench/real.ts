// Real-world benchmark: a switch and two `ferry host` processes on loopback, real VMs, real
// migrations.
// Usage: npm run bench:real [-- --json FILE] [-- --ram MiB]
// Prints the page throughput of a precopy round, downtimes, remote-fault latency under a
// busy bulk lane (a task writing random pages), and what cooperative faults buy a loaded
// key-value VM right after the switchover: on loopback, and between hosts that add a
// round trip of a few milliseconds to their lanes (`far` in the JSON). Each section says
// how much of the cores' time the hypervisor took meanwhile (steal): on a shared virtual
// machine, what the numbers of a run stand on.

import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { call, type RealMigrationReport, type StartMigration, type VmInfo } from '../src/host/api.ts';
import { startLoad } from '../src/host/loadgen.ts';
import { type Cluster, startLoopback } from '../src/lab/loopback.ts';
import { migrateAndWait } from '../src/lab/migrate.ts';

const { values } = parseArgs({ options: { json: { type: 'string' }, ram: { type: 'string' } } });
const BIG_MIB = Number(values.ram ?? 1024);
const clock = () => performance.timeOrigin + performance.now();
/**
 * Latency each host adds to its lanes for the kv runs at a distance (ms): a 2 ms round
 * trip more, as between hosts in different rooms or a metro area apart.
 */
const FAR_LATENCY_MS = 1;

/**
 * The cores' time so far and the part of it the hypervisor gave to other machines (steal),
 * in ticks, from /proc/stat; zeros where there is none. On a shared virtual machine, steal
 * during a run is time every thread of it waited for, which no change here can win back.
 */
function cpuTicks(): { total: number; steal: number } {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    return { total: f.slice(0, 8).reduce((x, y) => x + y, 0), steal: f[7] ?? 0 };
  } catch {
    return { total: 0, steal: 0 };
  }
}

/** Steal since `from`, in per cent of the cores' time. */
function stealPercent(from: { total: number; steal: number }): number {
  const to = cpuTicks();
  const total = to.total - from.total;
  return total > 0 ? Math.round((1000 * (to.steal - from.steal)) / total) / 10 : 0;
}

/** A process that reads one TCP connection on loopback to its end and says at what rate. */
const SINK = `
const s = require('node:net').createServer((c) => {
  let n = 0, t0 = 0;
  c.on('data', (d) => { if (!t0) t0 = performance.now(); n += d.length; });
  c.on('end', () => { console.log(n / ((performance.now() - t0) / 1000) / 1e9); s.close(); });
}).listen(0, '127.0.0.1', () => console.log(s.address().port));`;

/**
 * What loopback TCP alone carries from one process to another (GB/s, 1 GiB in 256 KiB
 * writes): what this machine allows a bulk round at this moment, beside which the round's
 * own rate is read. Not a ceiling: the reader takes Node's default reads (a new buffer
 * each), which the bulk lane's reused buffer spares itself.
 */
async function loopbackTcpGBps(): Promise<number> {
  const sink = spawn(process.execPath, ['-e', SINK], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = (async function* () {
    let buf = '';
    for await (const d of sink.stdout!) {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        yield buf.slice(0, i);
        buf = buf.slice(i + 1);
      }
    }
  })();
  const port = Number((await lines.next()).value);
  const chunk = Buffer.alloc(256 * 1024, 1);
  const socket = connect(port, '127.0.0.1');
  await new Promise((r) => socket.once('connect', r));
  for (let sent = 0; sent < 2 ** 30; sent += chunk.length)
    if (!socket.write(chunk)) await new Promise((r) => socket.once('drain', r));
  socket.end();
  return Number((await lines.next()).value);
}

/** Each host's cluster secret, by control URL. */
const secrets = new Map<string, string>();
const api = <T>(url: string, method: string, path: string, body?: unknown) =>
  call<T>(url, secrets.get(url) ?? '', method, path, body);

/** A switch and hosts a, b on loopback (clients reach the VMs through the switch). */
async function loopback(laneLatencyMs = 0): Promise<{ cluster: Cluster; a: string; b: string }> {
  const cluster = await startLoopback({ laneLatencyMs });
  for (const h of cluster.hosts) secrets.set(h.url, cluster.secretHex);
  return { cluster, a: cluster.hosts[0].url, b: cluster.hosts[1].url };
}

async function migrate(
  from: string,
  to: string,
  body: Omit<StartMigration, 'to'>,
): Promise<{ report: RealMigrationReport; startedAt: number }> {
  const startedAt = clock();
  const report = await migrateAndWait(from, secrets.get(from) ?? '', { ...body, to });
  if (!report.integrity.ok) throw new Error(`migration ${report.outcome}: ${report.reason}`);
  return { report, startedAt };
}

const base = { cooperative: true, downtimeLimitMs: 300, prepage: 7 };

/** Measured pairs of cooperative and blocking runs, probe and kv (after a warm-up pair). */
const PAIRS = 3;

/** Probe pairs (cooperative, blocking) run before the counted ones: see the probes. */
const WARM_PROBE_PAIRS = 3;

/** Postcopies and precopies of the big VM measured, in turn. */
const BIG_ROUNDS = 5;

interface KvRun {
  cooperative: boolean;
  faults: number;
  p50: number;
  p99: number;
  before: number;
  first1s: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

interface ProbeRun {
  cooperative: boolean;
  faults: number;
  p50: number;
  p99: number;
  /** Steal during the run (%). */
  steal: number;
}

/**
 * Remote-fault latency alone: a VM full of data whose one task writes random pages (one
 * per step, 5,000 a second) moves with postcopy while the push fills a 1 Gbit/s bulk lane;
 * no prepaging, so that every page the task touches first is a demand of its own.
 */
async function probeRun(from: string, to: string, name: string, cooperative: boolean): Promise<ProbeRun> {
  await api<VmInfo>(from, 'POST', '/v1/vms', {
    name,
    ramMiB: 256,
    vcpus: 1,
    app: 'memtouch',
    appOptions: {
      rateMBps: 20,
      workingSetBytes: 240 * 2 ** 20,
      prefill: true,
      pattern: 'random',
      pagesPerStep: 1,
    },
  });
  const ticks = cpuTicks();
  const { report } = await migrate(from, to, {
    ...base,
    vm: name,
    mode: 'postcopy',
    cooperative,
    prepage: 0,
    maxBandwidthMbps: 1000,
  });
  const steal = stealPercent(ticks);
  await api(to, 'DELETE', `/v1/vms/${name}`);
  return {
    cooperative,
    faults: report.remoteFaults,
    p50: report.faultLatencyUs.p50,
    p99: report.faultLatencyUs.p99,
    steal,
  };
}

/** A loaded kv VM on `from` moves to `to` with postcopy; its clients' throughput around it. */
async function kvRun(from: string, to: string, name: string, cooperative: boolean): Promise<KvRun> {
  const vm = await api<VmInfo>(from, 'POST', '/v1/vms', {
    name,
    ramMiB: 256,
    vcpus: 1,
    app: 'kv',
    servers: 16,
  });
  // fill it: values spread over much of guest RAM, so the clients' keys fault after the switchover
  await startLoad({
    endpoint: vm.endpoint,
    connections: 16,
    keys: 40_000,
    setRatio: 1,
    valueBytes: 4000,
    requests: 40_000,
  }).done;
  const load = startLoad({
    endpoint: vm.endpoint,
    connections: 16,
    keys: 40_000,
    setRatio: 0,
    durationMs: 5000,
    thinkMs: 2,
  });
  await new Promise((r) => setTimeout(r, 2000));
  const { report, startedAt } = await migrate(from, to, {
    ...base,
    vm: name,
    mode: 'postcopy',
    cooperative,
    maxBandwidthMbps: 1000,
  });
  const res = await load.done;
  await api(to, 'DELETE', `/v1/vms/${name}`);
  if (res.lost > 0 || res.errors > 0)
    throw new Error(`${name}: ${res.lost} commands lost, ${res.errors} errors`);
  const sw = startedAt + report.switchoverMs - res.startedAt; // ms since the load began
  const rate = (a0: number, a1: number) => {
    let ops = 0;
    for (const [t, opsPerSec] of res.throughput) if (t >= a0 && t < a1) ops += (opsPerSec * 100) / 1000;
    return ops / ((a1 - a0) / 1000);
  };
  const before = rate(Math.max(0, sw - 1500), sw);
  return {
    cooperative,
    faults: report.remoteFaults,
    p50: report.faultLatencyUs.p50,
    p99: report.faultLatencyUs.p99,
    before,
    first1s: rate(sw, sw + 1000) / before,
  };
}

const lat = (l: { p50: number; p99: number }) => `p50 ${l.p50} µs, p99 ${l.p99} µs`;
const medianLatency = (runs: { p50: number; p99: number }[]) => ({
  p50: median(runs.map((r) => r.p50)),
  p99: median(runs.map((r) => r.p99)),
});

/**
 * Cooperative and blocking kv runs in turn between `a` and `b` (a warm-up pair, then
 * PAIRS measured): the first second after the switchover, cooperative ÷ blocking.
 */
async function kvPairs(a: string, b: string, label: string) {
  const ticks = cpuTicks();
  const runs: KvRun[] = [];
  for (let i = 0; i < 2 + 2 * PAIRS; i++) {
    const cooperative = i % 2 === 0;
    const [from, to] = i % 4 < 2 ? [a, b] : [b, a];
    const run = await kvRun(from, to, `${label}${i}`, cooperative);
    if (i < 2) continue; // warm-up: the hosts' postcopy paths compiled
    runs.push(run);
    console.log(
      `${label}, 1 vCPU, postcopy, ${cooperative ? 'cooperative' : 'blocking   '} faults: ${String(run.faults).padStart(5)} remote faults, ` +
        `latency ${lat(run)}; ${run.before.toFixed(0)} ops/s before, ` +
        `${(run.first1s * 100).toFixed(0)}% of it in the first second after the switchover`,
    );
  }
  const coop = runs.filter((r) => r.cooperative);
  const blocking = runs.filter((r) => !r.cooperative);
  const ratios = coop.map((c, k) => c.first1s / blocking[k].first1s);
  return {
    ratios,
    ratio: median(ratios),
    steal: stealPercent(ticks),
    faultLatencyUs: { cooperative: medianLatency(coop), blocking: medianLatency(blocking) },
  };
}

const nearHosts = await loopback();

async function main() {
  const { a, b } = nearHosts;
  const results: Record<string, unknown> = {};
  const benchTicks = cpuTicks();

  // 0. warm-up: a small VM there and back, precopy then postcopy, so that what follows
  // measures hosts whose migration paths are compiled, as a host that has been up a while
  await api<VmInfo>(a, 'POST', '/v1/vms', {
    name: 'warm',
    ramMiB: 64,
    vcpus: 1,
    app: 'memtouch',
    appOptions: { rateMBps: 1, workingSetBytes: 32 * 2 ** 20, prefill: true },
  });
  await migrate(a, b, { ...base, vm: 'warm', mode: 'precopy' });
  await migrate(b, a, { ...base, vm: 'warm', mode: 'postcopy' });
  await api(a, 'DELETE', '/v1/vms/warm');

  // 1. page throughput of a precopy round, and downtimes, for a VM whose RAM is full of data
  await api<VmInfo>(a, 'POST', '/v1/vms', {
    name: 'big',
    ramMiB: BIG_MIB,
    vcpus: 1,
    app: 'memtouch',
    appOptions: { rateMBps: 1, workingSetBytes: (BIG_MIB - 8) * 2 ** 20, prefill: true },
  });
  const roundGBps = (r: RealMigrationReport) => (r.roundPages[0] * 4096) / (r.roundEndMs[0] / 1000) / 1e9;
  // into b, whose process never held that much memory: every page is the kernel's first
  const fresh = (await migrate(a, b, { ...base, vm: 'big', mode: 'precopy' })).report;
  results.bulkFreshGBps = roundGBps(fresh);
  // then back and forth: a postcopy to a, and a precopy into b again, which kept the RAM
  // of the VM that left it (its RAM pool), as a host that has run VMs does: the round the
  // hosts' own work allows. The pool zeroes that RAM in the background first (a few
  // tenths of a second a GiB). One sample of each on these shared cores moves by half
  // from run to run: medians of BIG_ROUNDS. The first round is not counted but reported
  // as the cold one: V8 compiles the paths a VM of this size makes hot meanwhile (70–150
  // functions a host), on the cores the migration needs. After each round, loopback TCP
  // alone between two processes: what this machine carries at that moment, beside which the
  // round's rate is read (on a shared machine it moves by half within a minute).
  const postcopyDowntimes: number[] = [];
  const precopyDowntimes: number[] = [];
  const bulk: number[] = [];
  /** Loopback TCP alone, measured after each round, beside it. */
  const tcp: number[] = [];
  const cold = { postcopyDowntimeMs: 0, bulkGBps: 0, faultLatencyUs: { p50: 0, p99: 0 } };
  const bulkTicks = cpuTicks();
  results.cold = cold;
  for (let i = 0; i <= BIG_ROUNDS; i++) {
    const post = (await migrate(b, a, { ...base, vm: 'big', mode: 'postcopy' })).report;
    await new Promise((r) => setTimeout(r, 1500));
    const pre = (await migrate(a, b, { ...base, vm: 'big', mode: 'precopy' })).report;
    if (i === 0) {
      Object.assign(cold, { postcopyDowntimeMs: post.downtimeMs, bulkGBps: roundGBps(pre) });
      continue;
    }
    postcopyDowntimes.push(post.downtimeMs);
    bulk.push(roundGBps(pre));
    tcp.push(await loopbackTcpGBps());
    precopyDowntimes.push(pre.downtimeMs);
  }
  results.bulkGBps = median(bulk);
  results.bulkGBpsRuns = bulk;
  results.loopbackTcpGBps = median(tcp);
  results.loopbackTcpGBpsRuns = tcp;
  results.bulkOverLoopbackTcp = median(bulk) / median(tcp);
  results.postcopyDowntimeMs = median(postcopyDowntimes);
  results.postcopyDowntimeMsRuns = postcopyDowntimes;
  results.precopyDowntimeMs = median(precopyDowntimes);
  results.precopyDowntimeMsRuns = precopyDowntimes;
  const runs = (xs: number[], digits: number) => xs.map((x) => x.toFixed(digits)).join(', ');
  console.log(
    `bulk: ${median(bulk).toFixed(2)} GB/s in precopy round 1 of a ${BIG_MIB} MiB VM into a host with pooled RAM ` +
      `(median of ${runs(bulk, 2)}), ${(results.bulkFreshGBps as number).toFixed(2)} GB/s into fresh memory (target ≥ 1.5)\n` +
      `loopback TCP alone, process to process: ${median(tcp).toFixed(2)} GB/s (median of ${runs(tcp, 2)}); ` +
      `the round reaches ${((100 * median(bulk)) / median(tcp)).toFixed(0)}% of it\n` +
      `downtime: precopy ${median(precopyDowntimes).toFixed(1)} ms (limit 300; ${runs(precopyDowntimes, 1)}), ` +
      `postcopy ${median(postcopyDowntimes).toFixed(2)} ms (target ≤ 5; ${runs(postcopyDowntimes, 2)})\n` +
      `the hosts' first such round, not counted: postcopy downtime ${cold.postcopyDowntimeMs.toFixed(2)} ms, ` +
      `bulk ${cold.bulkGBps.toFixed(2)} GB/s; steal ${stealPercent(bulkTicks)}%`,
  );
  await api(b, 'DELETE', '/v1/vms/big');

  // 2. remote-fault latency while the background push keeps the bulk lane busy. The bulk
  // lane runs at 1 Gbit/s, as over a link of that rate (loopback has none: the push would
  // take every core). Cooperative and blocking runs alternate, each VM moving between a and b.
  // Warm-up pairs first, one each way and not counted: the hosts then hold RAM of the probe
  // VM's size in their pools (into fresh memory, the first probe's destination maps every
  // page it installs), and V8 has compiled their paths. A host's first few migrations of
  // the kind run beside that compiling (100–300 functions a host a migration, on the
  // shared cores): their tail is 2–4 ms until it settles, after about six. The first
  // warm-up probe is reported as the cold one.
  const warmUps: ProbeRun[] = [];
  for (let i = 0; i < WARM_PROBE_PAIRS; i++) {
    warmUps.push(await probeRun(a, b, `probe-warm-${i}a`, true));
    warmUps.push(await probeRun(b, a, `probe-warm-${i}b`, false));
  }
  cold.faultLatencyUs = { p50: warmUps[0].p50, p99: warmUps[0].p99 };
  console.log(
    `random page writes, postcopy, cooperative faults, the hosts' first such migration: latency ${lat(warmUps[0])}` +
      ` (then, while they warm up: ${warmUps
        .slice(1)
        .map((r) => `${r.p50}/${r.p99}`)
        .join(', ')} µs)`,
  );
  const probes: ProbeRun[] = [];
  for (let i = 0; i < 2 * PAIRS; i++) {
    const [from, to] = i % 4 < 2 ? [a, b] : [b, a];
    const run = await probeRun(from, to, `probe${i}`, i % 2 === 0);
    probes.push(run);
    console.log(
      `random page writes, postcopy, ${run.cooperative ? 'cooperative' : 'blocking   '} faults: ` +
        `${String(run.faults).padStart(5)} remote faults, latency ${lat(run)}; steal ${run.steal}%`,
    );
  }
  const probeLatency = medianLatency(probes.filter((r) => r.cooperative));
  results.faultLatencyUs = probeLatency;
  results.faultLatencyUsRuns = probes.map(({ cooperative, p50, p99, steal }) => ({
    cooperative,
    p50,
    p99,
    steal,
  }));
  results.blockingFaultLatencyUs = medianLatency(probes.filter((r) => !r.cooperative));

  // 3. throughput right after the switchover, cooperative vs blocking faults. The clients
  // are a closed loop with think time, so that before the migration the machine has room:
  // at full speed they alone use both cores of a small machine, and any fault would then
  // be measured as CPU queueing.
  const near = await kvPairs(a, b, 'kv');
  results.kvFaultLatencyUs = near.faultLatencyUs;
  results.coopOverBlockingFirst1s = near.ratio;
  console.log(
    `fault latency, medians of ${PAIRS} runs: cooperative ${lat(probeLatency)} (targets ≤ 150 and ≤ 1000), ` +
      `blocking ${lat(results.blockingFaultLatencyUs as { p50: number; p99: number })}; ` +
      `under kv load: cooperative ${lat(near.faultLatencyUs.cooperative)}, blocking ${lat(near.faultLatencyUs.blocking)}\n` +
      `first second after the switchover, cooperative ÷ blocking: ${near.ratio.toFixed(2)} ` +
      `(median; pairs ${near.ratios.map((r) => r.toFixed(2)).join(', ')}); steal ${near.steal}%`,
  );
  await nearHosts.cluster.down();

  // 4. the same between hosts that each add FAR_LATENCY_MS to their lanes: a demand now
  // takes milliseconds, which a blocked vCPU loses and a parked task does not
  const farHosts = await loopback(FAR_LATENCY_MS);
  try {
    const far = await kvPairs(farHosts.a, farHosts.b, 'far');
    results.far = {
      laneLatencyMs: FAR_LATENCY_MS,
      kvFaultLatencyUs: far.faultLatencyUs,
      coopOverBlockingFirst1s: far.ratio,
    };
    console.log(
      `hosts ${2 * FAR_LATENCY_MS} ms further apart (round trip): under kv load, fault latency cooperative ` +
        `${lat(far.faultLatencyUs.cooperative)}, blocking ${lat(far.faultLatencyUs.blocking)}\n` +
        `first second after the switchover, cooperative ÷ blocking: ${far.ratio.toFixed(2)} ` +
        `(median; pairs ${far.ratios.map((r) => r.toFixed(2)).join(', ')}); steal ${far.steal}%`,
    );
  } finally {
    await farHosts.cluster.down();
  }
  results.stealPercent = stealPercent(benchTicks);
  console.log(
    `node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}; ` +
      `the hypervisor took ${results.stealPercent}% of the cores' time meanwhile (steal)`,
  );
  if (values.json) writeFileSync(values.json, `${JSON.stringify(results, null, 2)}\n`);
}

try {
  await main();
} finally {
  await nearHosts.cluster.down();
}
