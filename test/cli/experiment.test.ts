// `ferry experiment paper`: the same comparison in the simulator, for real through the
// switch with redis-benchmark and wrk, and both side by side.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { Agreement } from '../../src/cli/paper.ts';
import type { TrialResult } from '../../src/lab/trial.ts';
import type { Report } from '../../src/report/schema.ts';
import { ferry } from '../support/ferry-cli.ts';

const tmp = mkdtempSync(join(tmpdir(), 'ferry-experiment-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const RUNS = ['precopy', 'postcopy-blocking', 'postcopy-cooperative']
  .flatMap((v) => [`kv-${v}`, `http-${v}`])
  .sort();

test('--sim: every run completes; cooperative faults keep more of the throughput than blocking ones', () => {
  const json = join(tmp, 'sim.json');
  const r = ferry('experiment', 'paper', '--sim', '--quick', '--json', json);
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(readFileSync(json, 'utf8')) as Report;
  assert.equal(report.world, 'sim');
  assert.deepEqual(report.migrations.map((m) => m.variant).sort(), RUNS);
  for (const m of report.migrations) {
    assert.equal(m.outcome, 'completed', `${m.variant}: ${m.reason}`);
    assert.equal(m.remoteFaults > 0, m.mode === 'postcopy', `${m.variant}: ${m.remoteFaults} remote faults`);
  }
  const first1s = (variant: string) =>
    report.workloads.find((w) => w.variant === variant)!.relativeThroughput!.first1s;
  for (const app of ['kv', 'http'])
    assert.ok(
      first1s(`${app}-postcopy-cooperative`) >= first1s(`${app}-postcopy-blocking`),
      `${app}: cooperative ${first1s(`${app}-postcopy-cooperative`)} < blocking ${first1s(`${app}-postcopy-blocking`)}`,
    );
});

test('--both: real runs through the switch without a client error, side by side with the simulated ones', () => {
  const json = join(tmp, 'both.json');
  const r = ferry('experiment', 'paper', '--both', '--quick', '--loopback', '--json', json);
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /kv-postcopy-cooperative .* by (redis-benchmark|the built-in)/);
  assert.match(r.stdout, /within 15%/);
  // the dip table shows each run's way through the hosts; a precopy has no postcopy part
  assert.match(r.stdout, /way through the hosts, before \/ postcopy/);
  assert.match(r.stdout, /kv-precopy .* [\d.]+ ms \/ — /);
  const out = JSON.parse(readFileSync(json, 'utf8')) as {
    real: Report;
    runs: {
      run: string;
      requests: number;
      errors: number;
      connectionsLost: number;
      requestTimes: TrialResult['requestTimes'];
      downlinkQueueUs?: number;
    }[];
    sim: Report;
    agreement: Agreement[];
    link: { tcpMbps?: number; migrationMbps: number; efficiency: number };
  };
  // loopback: no TCP measurement; the idle VM's precopy under the 1 Gbit/s cap sets the
  // simulated link's efficiency
  assert.equal(out.link.tcpMbps, undefined);
  assert.ok(
    out.link.migrationMbps > 100 && out.link.migrationMbps <= 1100,
    `${out.link.migrationMbps} Mbit/s`,
  );
  assert.ok(out.link.efficiency > 0.1 && out.link.efficiency <= 1, `efficiency ${out.link.efficiency}`);
  for (const c of out.runs) {
    assert.deepEqual([c.errors, c.connectionsLost], [0, 0], `${c.run}: client errors, connections lost`);
    assert.ok(c.requests > 100, `${c.run}: ${c.requests} requests`);
    // each request's cycle holds its time in the guest; the postcopy's only where there is one
    const { baseline, postcopy } = c.requestTimes;
    assert.ok(baseline.requests > 0 && baseline.guestMs > 0, `${c.run}: ${JSON.stringify(baseline)}`);
    assert.ok(baseline.cycleMs >= baseline.guestMs, `${c.run}: ${JSON.stringify(baseline)}`);
    // part of it the requests spent crossing between the host's thread and the vCPUs'
    assert.ok(
      baseline.hopMs > 0 && baseline.hopMs < baseline.guestMs,
      `${c.run}: ${JSON.stringify(baseline)}`,
    );
    assert.equal(postcopy === null, c.run.includes('precopy'), `${c.run}: ${JSON.stringify(postcopy)}`);
    // on loopback no link is shaped: nothing to probe
    assert.equal(c.downlinkQueueUs, undefined);
  }
  assert.equal(out.real.world, 'real');
  assert.deepEqual(out.real.migrations.map((m) => m.variant).sort(), RUNS);
  for (const m of out.real.migrations) {
    assert.equal(m.outcome, 'completed', `${m.variant}: ${m.reason}`);
    assert.deepEqual((m as unknown as { integrity: unknown }).integrity, { checked: true, ok: true });
  }
  // four metrics per run, two more (requests and faults per request in postcopy) for postcopy runs
  assert.equal(out.agreement.length, RUNS.length * 4 + 4 * 2);
  // the simulated twin is configured from the same run: it lands in the same range
  for (const a of out.agreement.filter((x) => x.metric === 'total time'))
    assert.ok(a.ratio > 0.5 && a.ratio < 2, `${a.run}: simulated ÷ measured total time ${a.ratio}`);
});

test('experiment: no world chosen, or an unknown experiment, is one line', () => {
  const none = ferry('experiment', 'paper');
  assert.equal(none.status, 2);
  assert.match(none.stderr, /^ferry: choose one of --real, --sim, --both\n$/);
  const unknown = ferry('experiment', 'nope', '--sim');
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /^ferry: unknown experiment 'nope' \(known: paper\)\n$/);
});
