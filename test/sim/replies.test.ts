// Server replies leave through the NIC of the host the guest runs on: they share its upload
// with the migration's pages, as one flow (the host's link to the switch).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { httpObjectSize } from '../../src/apps/http.ts';
import { validateScenario } from '../../src/sim/scenario.ts';
import { simulate } from '../../src/sim/world.ts';

/** An http server on host a moved to b by precopy over 200 Mbit/s links; its rate before and during. */
function run(thinkMs: number, cpuMs = 1, o: { connections?: number; uplinkQueueUs?: number } = {}) {
  const uplinkQueueUs = o.uplinkQueueUs ?? 0;
  const scenario = validateScenario({
    name: 'replies',
    durationS: 60,
    settleS: 1,
    hosts: [
      { name: 'a', nicMbps: 200, latencyUs: 0, uplinkQueueUs },
      { name: 'b', nicMbps: 200, latencyUs: 0, uplinkQueueUs },
    ],
    vms: [
      {
        name: 'web',
        host: 'a',
        ramMiB: 128,
        usedMiB: 64,
        vcpus: 1,
        // objects of 1 to 64 KiB, no counters written: nothing is dirtied
        workload: { kind: 'http', connections: o.connections ?? 8, thinkMs, cpuMs, objects: 64, hitRatio: 0 },
        dirty: { rateMBps: 0 },
      },
    ],
    migrations: [{ vm: 'web', to: 'b', atS: 2, mode: 'precopy' }],
  });
  const r = simulate(scenario, { seed: 1 });
  const m = r.migrations[0];
  assert.equal(m.outcome, 'completed');
  const w = r.workloads[0];
  const mean = (from: number, to: number) => {
    const bins = w.throughput.filter(([t]) => t >= from && t < to);
    return bins.reduce((n, [, x]) => n + x, 0) / bins.length;
  };
  return { m, opsPerSec: mean(500, 2000), during: mean(m.startMs + 200, m.startMs + m.totalTimeMs - 200) };
}

test('replies share the source host’s upload: a migration out of a busy server takes longer', () => {
  const quiet = run(10_000); // a request now and then
  const busy = run(0);
  const link = (200e6 * 0.94) / 8; // bytes per second
  // a quiet server leaves the link to the migration
  const alone = quiet.m.bytesSent / link;
  assert.ok(Math.abs(quiet.m.totalTimeMs / 1000 - alone) / alone < 0.05, `quiet: ${quiet.m.totalTimeMs} ms`);
  // a busy one sends replies (the objects, 1 to 64 KiB, and their heads) at a steady rate;
  // the migration gets what they leave of the link
  let mean = 0;
  for (let i = 0; i < 64; i++) mean += (httpObjectSize(i) + 100) / 64;
  const replies = busy.opsPerSec * mean;
  assert.ok(replies > 0.3 * link, `replies take ${((replies / link) * 100).toFixed(0)}% of the link`);
  const left = busy.m.bytesSent / (link - replies);
  assert.ok(
    Math.abs(busy.m.totalTimeMs / 1000 - left) / left < 0.15,
    `busy: ${busy.m.totalTimeMs} ms, ${left} s expected`,
  );
});

test('replies are one flow per host, as its connections are multiplexed to the switch: in bulk they take half the link', () => {
  // a server fast enough to send more than the link carries
  const flood = run(0, 0.05);
  const link = (200e6 * 0.94) / 8;
  const half = flood.m.bytesSent / (link / 2);
  assert.ok(
    Math.abs(flood.m.totalTimeMs / 1000 - half) / half < 0.15,
    `flooded: ${flood.m.totalTimeMs} ms, ${half} s expected`,
  );
});

test('a filled uplink holds a standing queue: replies wait it out while the migration fills the link, not before', () => {
  // a request now and then (4 clients thinking 20 ms): its replies alone never fill the link
  const none = run(20, 0.2, { connections: 4 });
  const deep = run(20, 0.2, { connections: 4, uplinkQueueUs: 20_000 }); // as long as the think time
  // replies that find the link free go at once
  assert.ok(
    Math.abs(deep.opsPerSec / none.opsPerSec - 1) < 0.05,
    `before: ${deep.opsPerSec} vs ${none.opsPerSec}`,
  );
  // behind the migration's pages each reply waits 20 ms more: a 20 ms cycle (think time)
  // plus the wire becomes about 40 ms, half the rate
  const ratio = deep.during / none.during;
  assert.ok(ratio > 0.4 && ratio < 0.65, `during: ${deep.during} vs ${none.during} req/s`);
});
