// `ferry demo` (the README's `npm run demo`) end to end: two hosts and the switch start,
// a VM under load moves while clients keep going, a report and an HTML page come out, and
// nothing it started is left running.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ferry } from '../support/ferry-cli.ts';

const tmp = mkdtempSync(join(tmpdir(), 'ferry-demo-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Hosts and switches whose files are in `dir`. */
function processesOf(dir: string): string[] {
  const out = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
  return out.split('\n').filter((l) => /ferry\.mjs (host|switch)/.test(l) && l.includes(dir));
}

test('the demo migrates a kv VM under load with postcopy and cooperative faults, and cleans up', () => {
  const json = join(tmp, 'demo.json');
  const html = join(tmp, 'demo.html');
  const r = ferry('demo', '--ram', '64', '--json', json, '--html', html);
  const shown = `exit ${r.status}\n${r.stdout}\n${r.stderr}`;
  assert.equal(r.status, 0, shown);
  assert.match(r.stdout, /moves from a to b by postcopy, cooperative faults/);
  assert.match(r.stdout, /^Warming the hosts: a 32 MiB VM there and back/m);
  assert.match(r.stdout, /postcopy\s+\[[#.]+\]/, 'live progress of the postcopy phase');
  for (const row of ['downtime', 'total time', 'first second after the switchover', 'back to 90%', 'clients'])
    assert.match(r.stdout, new RegExp(`^${row}\\s`, 'm'), `summary row '${row}'`);

  const report = JSON.parse(readFileSync(json, 'utf8'));
  assert.equal(report.world, 'real');
  const [m] = report.migrations;
  assert.equal(m.outcome, 'completed', m.reason);
  assert.equal(m.mode, 'postcopy');
  assert.equal(m.cooperative, true);
  assert.ok(m.downtimeMs > 0 && m.downtimeMs < m.totalTimeMs);
  assert.deepEqual(report.integrity, { checked: true, ok: true });
  assert.equal(report.clients.errors, 0, shown);
  assert.ok(report.clients.requests > 1000, `clients made ${report.clients.requests} requests`);
  const [w] = report.workloads;
  assert.ok(w.baselineOpsPerSec > 0);
  assert.ok(w.throughput.length > 50, 'throughput in 100 ms bins over the run');
  assert.ok(w.relativeThroughput && w.relativeThroughput.first1s >= 0);
  assert.ok(
    existsSync(html) && readFileSync(html, 'utf8').includes('<svg'),
    'the HTML report has its charts',
  );
  const dir = /their logs: (\S+)\)/.exec(r.stdout)?.[1];
  assert.ok(dir, 'the demo says where its cluster runs');
  assert.deepEqual(processesOf(dir), [], 'no host or switch left running');
  assert.equal(existsSync(dir), false, 'its temporary folder is gone');
});

test('demo: a workload of the simulator without --sim is one line naming the flag', () => {
  const r = ferry('demo', '--workload', 'web');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^ferry: --workload: 'web' is not one of kv, http .*--sim/);
});

test('demo: added latency is for the real demo, and must be a number of ms in range', () => {
  const sim = ferry('demo', '--sim', '--latency', '1');
  assert.equal(sim.status, 2);
  assert.match(sim.stderr, /^ferry: --latency is for the real demo/);
  const bad = ferry('demo', '--latency', '-3');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--latency <ms>.*must be a number of ms from 0 to 1000/);
});
