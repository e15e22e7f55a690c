// The HTML report: one self-contained page with a table and an SVG per chart, built from
// synthetic reports, and `ferry report` as a user runs it.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parseReport } from '../../src/cli/report.ts';
import { renderHtml, thin } from '../../src/report/html.ts';
import type { MigrationReport, Report, WorkloadReport } from '../../src/report/schema.ts';
import { ferry } from '../support/ferry-cli.ts';

const tmp = mkdtempSync(join(tmpdir(), 'ferry-report-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const EVIL = '<b>x</b>';
const RUN_MS = 20_000;

function migration(
  variant: string,
  switchoverMs: number,
  over: Partial<MigrationReport> = {},
): MigrationReport {
  const pages = 262_144;
  const missingPages: [number, number][] = [];
  for (let t = 0; t <= RUN_MS; t += 100)
    missingPages.push([
      t,
      t < switchoverMs ? pages : Math.max(0, Math.round(pages * (1 - (t - switchoverMs) / 6000))),
    ]);
  return {
    vm: 'web1',
    variant,
    mode: 'postcopy',
    cooperative: true,
    source: 'src',
    destination: 'dst',
    outcome: 'completed',
    reason: 'all pages on the destination',
    startMs: 1000,
    totalTimeMs: switchoverMs - 1000 + 6000,
    switchoverMs,
    downtimeMs: 12.5,
    bytesSent: pages * 4096,
    pagesSent: { bulk: pages, urgent: 900, prepaged: 3000, resent: 0, zero: 10 },
    rounds: 0,
    roundPages: [],
    roundEndMs: [],
    remoteFaults: 1200,
    demandResends: 0,
    asyncFaults: 1100,
    syncFaults: 100,
    vcpuBlockedMs: 830,
    faultLatencyUs: { p50: 512, p90: 2048, p99: 8192, max: 16384, mean: 1100 },
    postcopyMs: 6000,
    missingPages,
    faultLatencyHistogram: [
      [128, 10],
      [256, 200],
      [512, 500],
      [1024, 300],
      [2048, 120],
      [4096, 50],
      [8192, 15],
      [16384, 5],
    ],
    ...over,
  };
}

function workload(variant: string, switchoverMs: number): WorkloadReport {
  const throughput: [number, number][] = [];
  const latencyMs: [number, number, number][] = [];
  const vcpu: WorkloadReport['vcpu'] = [];
  for (let t = 0; t < RUN_MS; t += 100) {
    const dip = t >= switchoverMs && t < switchoverMs + 3000 ? 0.3 : 1;
    throughput.push([t, 5000 * dip]);
    latencyMs.push([t, 2 / dip, 10 / dip]);
    const blocked = dip < 1 ? 120 : 0;
    vcpu.push({ tMs: t, busyMs: 250 - blocked, haltedMs: 150, blockedMs: blocked });
  }
  return {
    vm: 'web1',
    variant,
    kind: 'web',
    vcpus: 4,
    mode: 'postcopy',
    cooperative: true,
    throughput,
    latencyMs,
    relativeThroughput: { first1s: 0.3, first5s: 0.58, first10s: 0.79 },
    baselineOpsPerSec: 5000,
    vcpu,
  };
}

function fullReport(): Report {
  return {
    scenario: 'two-variants',
    seed: 7,
    world: 'sim',
    migrations: [migration('cooperative', 5000), migration(EVIL, 7300, { cooperative: false })],
    workloads: [workload('cooperative', 5000), workload(EVIL, 7300)],
  };
}

/** A precopy-only report with no workloads, no remote faults, no time series. */
function bareReport(): Report {
  const m = migration('', -1, {
    mode: 'precopy',
    outcome: 'aborted',
    reason: 'did not converge',
    remoteFaults: 0,
    asyncFaults: 0,
    syncFaults: 0,
    vcpuBlockedMs: 0,
    missingPages: [],
    faultLatencyHistogram: [],
  });
  return { scenario: 'ring', seed: 1, world: 'sim', migrations: [m], workloads: [] };
}

const svgCount = (html: string) => html.match(/<svg[\s>]/g)?.length ?? 0;

let full: string | undefined;
async function fullHtml(): Promise<string> {
  full ??= await renderHtml(fullReport());
  return full;
}

test('a full report has the tables and one SVG per chart', async () => {
  const html = await fullHtml();
  assert.match(html, /^<!doctype html>/);
  assert.equal(svgCount(html), 4, 'throughput, missing pages, fault latency, vCPU state');
  assert.ok(!html.includes('class="skip"'), 'no chart skipped');
  for (const h of [
    'Migrations',
    'Throughput after switchover',
    'Remote-fault latency',
    'vCPU state over time',
  ])
    assert.ok(html.includes(`<h2>${h}</h2>`), h);
  assert.ok(html.includes('>30%<') && html.includes('>79%<'), 'relative throughput cells');
  assert.ok(html.includes('>0.51 / 8.19<'), 'fault latency p50 / p99 in ms');
  assert.ok(html.includes('>1100 / 100<'), 'async / sync faults');
});

test('each variant’s switchover is a rule at its switchover time', async () => {
  const html = await fullHtml();
  // the rules are named marks; each carries its time as an accessible label
  const rules = html.match(/class="mark-rule role-mark switchover_marks"/g) ?? [];
  // throughput and missing pages: one mark each; vCPU state: one per variant panel
  assert.equal(rules.length, 4, 'on the throughput, missing-pages and vCPU charts');
  for (const t of ['5.00', '7.30'])
    assert.equal(
      html.match(new RegExp(`aria-label="switchover of web1 \\([^"]*\\) at ${t.replace('.', '\\.')} s"`, 'g'))
        ?.length,
      3,
      `switchover at ${t} s on three charts`,
    );
});

test('the page is self-contained: no scripts, no external references', async () => {
  const html = await fullHtml();
  assert.ok(!/<script/i.test(html), 'no <script');
  assert.ok(!/<link|@import|<img|<iframe/i.test(html), 'no linked resources');
  const allowed = new Set(['http://www.w3.org/2000/svg', 'http://www.w3.org/1999/xlink']);
  const urls = html.match(/https?:\/\/[^\s"'<>)]*/g) ?? [];
  assert.ok(urls.length > 0, 'the SVGs declare their namespace');
  assert.deepEqual(
    urls.filter((u) => !allowed.has(u)),
    [],
  );
});

test('text from the report is escaped everywhere, tables and SVG alike', async () => {
  const html = await fullHtml();
  assert.ok(!html.includes(EVIL), 'the raw variant name never appears');
  assert.ok(!html.includes('<b>x'), 'no <b> element injected');
  const escaped = '&lt;b&gt;x&lt;/b&gt;';
  assert.ok(html.includes(`<td>${escaped}</td>`), 'the escaped variant name is in the table');
  const svgs = html.match(/<svg[\s\S]*?<\/svg>/g) ?? [];
  assert.ok(svgs.filter((svg) => svg.includes(escaped)).length >= 3, 'and in the charts’ legends and labels');
  const evil: Report = {
    ...bareReport(),
    scenario: '</title><script>alert(1)</script>',
    migrations: [{ ...bareReport().migrations[0], vm: '"><img src=x>', reason: `'quote' & "dq"` }],
  };
  const page = await renderHtml(evil);
  assert.ok(!/<script|<img/i.test(page));
  assert.ok(page.includes('&lt;/title&gt;&lt;script&gt;'));
  assert.ok(page.includes('title="&#39;quote&#39; &amp; &quot;dq&quot;"'));
});

test('a report without workloads or faults still renders, with a note per skipped chart', async () => {
  const html = await renderHtml(bareReport());
  assert.equal(svgCount(html), 0);
  assert.equal(html.match(/<p class="skip">/g)?.length, 4, 'four skip notes');
  assert.ok(!html.includes('Throughput after switchover'), 'no relative-throughput table without workloads');
  assert.ok(html.includes('>aborted<'), 'the migration row is there');
  assert.match(html, /<li>web1 \(\(default\)\): aborted, did not converge<\/li>/, 'and why it ended');
  // and with only the pages series, just that chart
  const withPages = bareReport();
  withPages.migrations[0].missingPages = [
    [0, 100],
    [100, 50],
    [200, 0],
  ];
  const one = await renderHtml(withPages);
  assert.equal(svgCount(one), 1);
  assert.equal(one.match(/<p class="skip">/g)?.length, 3);
});

test('an older report without the newer fields renders from what it has', async () => {
  const m = migration('a', 5000) as unknown as Record<string, unknown>;
  for (const k of ['missingPages', 'faultLatencyHistogram', 'switchoverMs', 'asyncFaults', 'cooperative'])
    delete m[k];
  const old = parseReport(
    JSON.stringify({ scenario: 's', seed: 1, world: 'sim', migrations: [m] }),
    'old.json',
  );
  const html = await renderHtml(old);
  assert.equal(svgCount(html), 0);
  assert.ok(html.includes('<td>web1</td>'));
});

test('long series are thinned for plotting, keeping a one-bin dip', () => {
  const rows = Array.from({ length: 6000 }, (_, i) => [i * 100, i === 3217 ? 0 : 5000 + (i % 7)]);
  const out = thin(rows);
  assert.ok(out.length <= 1000 && out.length >= 500, `${out.length} points`);
  assert.ok(
    out.some(([t, v]) => t === 321_700 && v === 0),
    'the dip survives',
  );
  assert.ok(
    out.every(([t], i) => i === 0 || t > out[i - 1][0]),
    'still in time order',
  );
  const short = rows.slice(0, 50);
  assert.equal(thin(short), short, 'short series untouched');
});

test('ferry report writes the page; bad input is one line and exit 2', () => {
  const input = join(tmp, 'report.json');
  writeFileSync(input, JSON.stringify(fullReport()));
  const out = join(tmp, 'report.html');
  const ok = ferry('report', input, '-o', out);
  assert.equal(ok.status, 0, ok.stderr);
  assert.ok(existsSync(out));
  assert.equal(svgCount(readFileSync(out, 'utf8')), 4);
  assert.ok(ok.stdout.includes(out));

  const notJson = join(tmp, 'not.json');
  writeFileSync(notJson, '{"migrations": [\n oops');
  const notReport = join(tmp, 'other.json');
  writeFileSync(notReport, JSON.stringify({ name: 'package' }));
  const cases: [string[], RegExp][] = [
    [[join(tmp, 'missing.json'), '-o', join(tmp, 'x.html')], /does not exist/],
    [[notJson, '--output', join(tmp, 'x.html')], /is not JSON/],
    [[notReport, '-o', join(tmp, 'x.html')], /not a Ferry report \(no migrations array\)/],
    [[input, '-o', join(tmp, 'no-such-dir', 'x.html')], /cannot write/],
    [[input], /required option/],
  ];
  for (const [args, what] of cases) {
    const r = ferry('report', ...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], what);
    assert.ok(!r.stderr.includes('    at '));
  }
  assert.ok(!existsSync(join(tmp, 'x.html')), 'nothing written on bad input');
});
