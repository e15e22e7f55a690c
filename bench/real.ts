// Real-world benchmark: a switch and two `ferry host` processes on loopback, real VMs, real
// migrations.
// Usage: npm run bench:real [-- --json FILE] [-- --ram MiB]
// Prints the page throughput of a precopy round, downtimes, remote-fault latency under a
// busy bulk lane, and what cooperative faults buy a loaded key-value VM right after the
// switchover.

import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import {
  call,
  type MigrationInfo,
  type RealMigrationReport,
  type StartMigration,
  type VmInfo,
} from '../src/host/api.ts';
import { startLoad } from '../src/host/loadgen.ts';
import { startLoopback } from '../src/lab/loopback.ts';

const { values } = parseArgs({ options: { json: { type: 'string' }, ram: { type: 'string' } } });
const BIG_MIB = Number(values.ram ?? 1024);
const clock = () => performance.timeOrigin + performance.now();
// a switch and hosts a, b on loopback; clients reach the VMs through the switch
const cluster = await startLoopback();
const secret = cluster.secretHex;

async function migrate(
  from: string,
  to: string,
  body: Omit<StartMigration, 'to'>,
): Promise<{ report: RealMigrationReport; startedAt: number }> {
  const startedAt = clock();
  let info = await call<MigrationInfo>(from, secret, 'POST', '/v1/migrations', { ...body, to });
  while (info.state !== 'done') {
    await new Promise((r) => setTimeout(r, 20));
    info = await call<MigrationInfo>(from, secret, 'GET', `/v1/migrations/${info.id}`);
  }
  const r = info.report!;
  if (r.outcome !== 'completed' || !r.integrity.ok) throw new Error(`migration ${r.outcome}: ${r.reason}`);
  return { report: r, startedAt };
}

const base = { cooperative: true, downtimeLimitMs: 300, prepage: 7 };

async function main() {
  const [a, b] = cluster.hosts.map((h) => h.url);
  const results: Record<string, unknown> = {};

  // 1. page throughput of a precopy round, and downtimes, for a VM whose RAM is full of data
  await call<VmInfo>(a, secret, 'POST', '/v1/vms', {
    name: 'big',
    ramMiB: BIG_MIB,
    vcpus: 1,
    app: 'memtouch',
    appOptions: { rateMBps: 1, workingSetBytes: (BIG_MIB - 8) * 2 ** 20, prefill: true },
  });
  const pre = (await migrate(a, b, { ...base, vm: 'big', mode: 'precopy' })).report;
  const round1Bytes = pre.roundPages[0] * 4096;
  results.bulkGBps = round1Bytes / (pre.roundEndMs[0] / 1000) / 1e9;
  results.precopyDowntimeMs = pre.downtimeMs;
  const post = (await migrate(b, a, { ...base, vm: 'big', mode: 'postcopy' })).report;
  results.postcopyDowntimeMs = post.downtimeMs;
  console.log(
    `bulk: ${(results.bulkGBps as number).toFixed(2)} GB/s in precopy round 1 of a ${BIG_MIB} MiB VM (target ≥ 1.5)\n` +
      `downtime: precopy ${pre.downtimeMs.toFixed(1)} ms (limit 300), postcopy ${post.downtimeMs.toFixed(2)} ms (target ≤ 5)`,
  );
  await call(a, secret, 'DELETE', '/v1/vms/big');

  // 2. remote-fault latency while the background push keeps the bulk lane busy, and
  // 3. throughput right after the switchover, cooperative vs blocking faults
  const kvMiB = 256;
  const first1s: Record<string, number> = {};
  for (const cooperative of [true, false]) {
    const name = cooperative ? 'kvc' : 'kvb';
    const vm = await call<VmInfo>(a, secret, 'POST', '/v1/vms', {
      name,
      ramMiB: kvMiB,
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
      durationMs: 6000,
    });
    await new Promise((r) => setTimeout(r, 2000));
    const { report, startedAt } = await migrate(a, b, { ...base, vm: name, mode: 'postcopy', cooperative });
    const res = await load.done;
    const sw = startedAt + report.switchoverMs - res.startedAt; // ms since the load began
    const rate = (from: number, to: number) => {
      let ops = 0;
      for (const [t, opsPerSec] of res.throughput) if (t >= from && t < to) ops += (opsPerSec * 100) / 1000;
      return ops / ((to - from) / 1000);
    };
    const before = rate(Math.max(0, sw - 1500), sw);
    first1s[cooperative ? 'cooperative' : 'blocking'] = rate(sw, sw + 1000) / before;
    if (cooperative)
      results.faultLatencyUs = { p50: report.faultLatencyUs.p50, p99: report.faultLatencyUs.p99 };
    console.log(
      `kv, 1 vCPU, postcopy, ${cooperative ? 'cooperative' : 'blocking'} faults: ${report.remoteFaults} remote faults, ` +
        `latency p50 ${report.faultLatencyUs.p50} µs p99 ${report.faultLatencyUs.p99} µs; throughput ${before.toFixed(0)} ops/s ` +
        `before, ${(first1s[cooperative ? 'cooperative' : 'blocking'] * 100).toFixed(0)}% of it in the first second after the switchover ` +
        `(${res.lost} commands lost, ${res.retries} retried)`,
    );
    await call(b, secret, 'DELETE', `/v1/vms/${name}`);
  }
  results.coopOverBlockingFirst1s = first1s.cooperative / first1s.blocking;
  console.log(
    `fault latency (cooperative run): p50 ${(results.faultLatencyUs as { p50: number }).p50} µs (target ≤ 150), ` +
      `p99 ${(results.faultLatencyUs as { p99: number }).p99} µs (target ≤ 1000)\n` +
      `first second after the switchover, cooperative ÷ blocking: ${(results.coopOverBlockingFirst1s as number).toFixed(2)}`,
  );
  console.log(`node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`);
  if (values.json) writeFileSync(values.json, `${JSON.stringify(results, null, 2)}\n`);
}

try {
  await main();
} finally {
  await cluster.down();
}
