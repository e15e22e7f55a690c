// A report as one self-contained HTML page: comparison tables and plots rendered to
// inline SVG (Vega-Lite compiled to Vega, rendered headless), so it opens offline.

import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { MigrationReport, Report, WorkloadReport } from './schema.ts';
import { formatBytes, formatMs } from './summary.ts';

const PALETTE = [
  '#4c78a8',
  '#f58518',
  '#54a24b',
  '#e45756',
  '#72b7b2',
  '#b279a2',
  '#eeca3b',
  '#9d755d',
  '#ff9da6',
  '#bab0ac',
  '#2f4b7c',
  '#a05195',
  '#d45087',
  '#00876c',
  '#ffa600',
  '#665191',
  '#7aa6c2',
  '#8c6d31',
  '#17becf',
  '#bcbd22',
];
// stacked from the bottom: busy, then blocked on remote faults, then halted (idle)
const VCPU_STATES = ['busy', 'blocked', 'halted'] as const;
const VCPU_COLOURS = ['#54a24b', '#e45756', '#d0d0d0'];
/** Plot width; a variant key on the right takes about 260 px more. */
const FULL_WIDTH = 720;

/** Escapes text for HTML element content and quoted attribute values. */
export function escapeHtml(value: unknown): string {
  return String(value)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

// The input is JSON from disk: every field is checked before use, so a partial or older
// report still renders (missing values show as a dash, missing series skip their chart).

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const str = (v: unknown): string => (v === undefined || v === null ? '' : String(v));
const arr = <T>(v: unknown): T[] => (Array.isArray(v) ? (v as T[]) : []);

/** Rows of `width` finite numbers; anything else is dropped. */
function tuples(v: unknown, width: number): number[][] {
  return arr<unknown>(v).filter(
    (r): r is number[] => Array.isArray(r) && r.length >= width && r.slice(0, width).every(isNum),
  );
}

/** Points per plotted series: about one per pixel of a full-width chart. */
const MAX_POINTS = 1000;

/**
 * Thins a time series of [t, v, ...] rows to about MAX_POINTS, keeping the lowest and the
 * highest row of each bucket so a short dip or spike still shows.
 */
export function thin(rows: number[][]): number[][] {
  if (rows.length <= MAX_POINTS) return rows;
  const size = Math.ceil(rows.length / (MAX_POINTS / 2));
  const out: number[][] = [];
  for (let i = 0; i < rows.length; i += size) {
    const chunk = rows.slice(i, i + size);
    let lo = 0;
    let hi = 0;
    chunk.forEach((r, j) => {
      if (r[1] < chunk[lo][1]) lo = j;
      if (r[1] > chunk[hi][1]) hi = j;
    });
    for (const j of lo === hi ? [lo] : [Math.min(lo, hi), Math.max(lo, hi)]) out.push(chunk[j]);
  }
  return out;
}

/** Averages a series of bins over groups of consecutive bins, to about MAX_POINTS / 2 groups. */
function coarsen<T extends { t: number; values: number[] }>(bins: T[]): { t: number; values: number[] }[] {
  if (bins.length <= MAX_POINTS / 2) return bins;
  const size = Math.ceil(bins.length / (MAX_POINTS / 2));
  const out: { t: number; values: number[] }[] = [];
  for (let i = 0; i < bins.length; i += size) {
    const chunk = bins.slice(i, i + size);
    const values = chunk[0].values.map((_, k) => chunk.reduce((s, b) => s + b.values[k], 0) / chunk.length);
    out.push({ t: chunk[0].t, values });
  }
  return out;
}

function variantLabel(v: unknown): string {
  return str(v) === '' ? '(default)' : str(v);
}

function firstSeen(values: string[]): string[] {
  return [...new Set(values)];
}

// ---------------------------------------------------------------- tables

const dash = '–';
const num = (v: unknown, f: (n: number) => string): string => (isNum(v) ? f(v) : dash);
const ms2 = (us: number) => (us / 1000).toFixed(2);
const pct = (x: number) => `${(x * 100).toFixed(0)}%`;

interface Cell {
  text: string;
  title?: string;
  cls?: string;
}

function htmlTable(header: string[], rows: Cell[][], numericCols: Set<number>): string {
  const th = header
    .map((h, i) => `<th${numericCols.has(i) ? ' class="num"' : ''}>${escapeHtml(h)}</th>`)
    .join('');
  const body = rows
    .map((r) => {
      const tds = r.map((c, i) => {
        const cls = [numericCols.has(i) ? 'num' : '', c.cls ?? ''].filter(Boolean).join(' ');
        const attrs = (cls ? ` class="${cls}"` : '') + (c.title ? ` title="${escapeHtml(c.title)}"` : '');
        return `<td${attrs}>${escapeHtml(c.text)}</td>`;
      });
      return `<tr>${tds.join('')}</tr>`;
    })
    .join('\n');
  return `<div class="table"><table>\n<thead><tr>${th}</tr></thead>\n<tbody>\n${body}\n</tbody>\n</table></div>`;
}

function migrationTable(ms: MigrationReport[]): string {
  const header = [
    'vm',
    'variant',
    'mode',
    'cooperative',
    'outcome',
    'total',
    'downtime',
    'sent',
    'remote faults',
    'async / sync faults',
    'fault latency p50 / p99 (ms)',
    'vCPU blocked',
  ];
  const rows = ms.map((m): Cell[] => {
    const faults = isNum(m.remoteFaults) ? m.remoteFaults : 0;
    const lat = m.faultLatencyUs as Partial<MigrationReport['faultLatencyUs']> | undefined;
    return [
      { text: str(m.vm) },
      { text: variantLabel(m.variant) },
      { text: str(m.mode) },
      {
        text:
          m.mode === 'precopy'
            ? dash
            : m.cooperative === true
              ? 'yes'
              : m.cooperative === false
                ? 'no'
                : dash,
      },
      { text: str(m.outcome), title: str(m.reason), cls: m.outcome === 'completed' ? '' : 'bad' },
      { text: num(m.totalTimeMs, formatMs) },
      { text: num(m.downtimeMs, formatMs) },
      { text: num(m.bytesSent, formatBytes) },
      { text: num(m.remoteFaults, String) },
      {
        text: isNum(m.asyncFaults) && isNum(m.syncFaults) ? `${m.asyncFaults} / ${m.syncFaults}` : dash,
      },
      {
        text:
          faults > 0 && lat && isNum(lat.p50) && isNum(lat.p99) ? `${ms2(lat.p50)} / ${ms2(lat.p99)}` : dash,
      },
      { text: num(m.vcpuBlockedMs, formatMs) },
    ];
  });
  return htmlTable(header, rows, new Set([5, 6, 7, 8, 9, 10, 11]));
}

/** Why the migrations that did not complete ended, spelled out below the table. */
function notCompleted(ms: MigrationReport[]): string {
  const bad = ms.filter((m) => m.outcome !== 'completed');
  if (bad.length === 0) return '';
  const items = bad
    .slice(0, 20)
    .map(
      (m) =>
        `<li>${escapeHtml(str(m.vm))} (${escapeHtml(variantLabel(m.variant))}): ${escapeHtml(str(m.outcome))}, ${escapeHtml(str(m.reason))}</li>`,
    );
  if (bad.length > 20) items.push(`<li>… and ${bad.length - 20} more</li>`);
  return `\n<ul class="notes">${items.join('')}</ul>`;
}

function relativeCell(rel: unknown, key: 'first1s' | 'first5s' | 'first10s'): Cell {
  const v = rel && typeof rel === 'object' ? (rel as Record<string, unknown>)[key] : undefined;
  if (!isNum(v)) return { text: dash };
  return { text: pct(v), cls: v < 0.5 ? 'bad' : v < 0.9 ? 'warn' : '' };
}

function workloadTable(ws: WorkloadReport[]): string {
  const header = [
    'vm',
    'variant',
    'kind',
    'vCPUs',
    'mode',
    'baseline ops/s',
    'first 1 s',
    'first 5 s',
    'first 10 s',
  ];
  const rows = ws.map((w): Cell[] => [
    { text: str(w.vm) },
    { text: variantLabel(w.variant) },
    { text: str(w.kind) },
    { text: num(w.vcpus, String) },
    {
      text:
        str(w.mode) +
        (w.mode === 'postcopy' || w.mode === 'hybrid'
          ? w.cooperative
            ? ', cooperative'
            : ', blocking'
          : ''),
    },
    { text: num(w.baselineOpsPerSec, (n) => n.toFixed(n >= 100 ? 0 : 1)) },
    relativeCell(w.relativeThroughput, 'first1s'),
    relativeCell(w.relativeThroughput, 'first5s'),
    relativeCell(w.relativeThroughput, 'first10s'),
  ]);
  return htmlTable(header, rows, new Set([3, 5, 6, 7, 8]));
}

// ---------------------------------------------------------------- charts

interface Layout {
  vms: string[];
  variants: string[];
  colour: {
    field: string;
    type: 'nominal';
    scale: { domain: string[]; range: string[] };
    legend: object | null;
  };
}

/** SI-prefixed labels (5k, 2M), with a plain 0 rather than "0k". */
const SI_AXIS = { format: '~s', labelExpr: "datum.value === 0 ? '0' : datum.label" };

/** The x axis of every time chart: seconds since the run began. */
const timeX = { field: 't', type: 'quantitative', title: 'time since the run began (s)' } as const;

interface SwitchoverRow {
  layer: 'rule';
  vm: string;
  variant: string;
  t: number;
  label: string;
}

function switchoverRows(
  ms: MigrationReport[],
  keep: (vm: string, variant: string) => boolean,
): SwitchoverRow[] {
  return ms
    .filter((m) => isNum(m.switchoverMs) && m.switchoverMs >= 0 && keep(str(m.vm), variantLabel(m.variant)))
    .map((m) => {
      const variant = variantLabel(m.variant);
      const t = m.switchoverMs / 1000;
      return {
        layer: 'rule',
        vm: str(m.vm),
        variant,
        t,
        label: `switchover of ${str(m.vm)} (${variant}) at ${t.toFixed(2)} s`,
      };
    });
}

/** One line per run (the rows of layer 'line'), coloured as the legend says. */
function lineLayer(yTitle: string, strokeWidth: number, colour: object) {
  return {
    transform: [{ filter: "datum.layer === 'line'" }],
    mark: { type: 'line', strokeWidth, clip: true },
    encoding: {
      x: timeX,
      y: { field: 'v', type: 'quantitative', title: yTitle, axis: SI_AXIS },
      color: colour,
      detail: { field: 'id', type: 'nominal' },
    },
  };
}

function switchoverLayer(colour: object) {
  return {
    name: 'switchover',
    transform: [{ filter: "datum.layer === 'rule'" }],
    mark: { type: 'rule', strokeDash: [5, 3], strokeWidth: 1.5 },
    encoding: { x: timeX, color: colour, description: { field: 'label' } },
  };
}

/**
 * Wraps a layered unit spec in a facet by VM when there are several, with each VM's y
 * scale its own (a database and an idle VM side by side share no useful range).
 */
function facetByVm(
  vms: string[],
  rows: object[],
  layer: object[],
  size: { height: number; sharedX?: boolean },
): TopLevelSpec {
  if (vms.length <= 1) {
    return {
      data: { values: rows },
      width: FULL_WIDTH,
      height: size.height,
      layer,
    } as TopLevelSpec;
  }
  const columns = vms.length <= 4 ? 2 : 3;
  const width = Math.floor((FULL_WIDTH - (columns - 1) * 40) / columns) - 10;
  return {
    data: { values: rows },
    columns,
    facet: { field: 'vm', type: 'nominal', sort: vms, title: null, header: { labelFontSize: 12 } },
    spec: { width, height: Math.round(size.height * 0.7), layer },
    resolve: {
      scale: { x: size.sharedX ? 'shared' : 'independent', y: 'independent' },
      axis: { x: 'independent', y: 'independent' },
    },
  } as TopLevelSpec;
}

function throughputSpec(report: Report, ws: WorkloadReport[], layout: Layout): TopLevelSpec | null {
  const rows: object[] = [];
  ws.forEach((w, id) => {
    for (const [tMs, ops] of thin(tuples(w.throughput, 2)))
      rows.push({
        layer: 'line',
        id,
        vm: str(w.vm),
        variant: variantLabel(w.variant),
        t: tMs / 1000,
        v: ops,
      });
  });
  if (rows.length === 0) return null;
  const have = new Set(ws.map((w) => `${str(w.vm)}\0${variantLabel(w.variant)}`));
  rows.push(...switchoverRows(report.migrations, (vm, variant) => have.has(`${vm}\0${variant}`)));
  const vms = layout.vms.filter((vm) => ws.some((w) => str(w.vm) === vm));
  return facetByVm(vms, rows, [lineLayer('ops/s', 1.2, layout.colour), switchoverLayer(layout.colour)], {
    height: 260,
  });
}

function missingPagesSpec(report: Report, layout: Layout): TopLevelSpec | null {
  const rows: object[] = [];
  const ms = report.migrations;
  ms.forEach((m, id) => {
    for (const [tMs, pages] of thin(tuples(m.missingPages, 2)))
      rows.push({
        layer: 'line',
        id,
        vm: str(m.vm),
        variant: variantLabel(m.variant),
        t: tMs / 1000,
        v: pages,
      });
  });
  if (rows.length === 0) return null;
  const have = new Set(
    ms
      .filter((m) => tuples(m.missingPages, 2).length > 0)
      .map((m) => `${str(m.vm)}\0${variantLabel(m.variant)}`),
  );
  rows.push(...switchoverRows(ms, (vm, variant) => have.has(`${vm}\0${variant}`)));
  const vms = layout.vms.filter((vm) =>
    ms.some((m) => str(m.vm) === vm && have.has(`${vm}\0${variantLabel(m.variant)}`)),
  );
  return facetByVm(
    vms,
    rows,
    [lineLayer('pages missing', 1.5, layout.colour), switchoverLayer(layout.colour)],
    { height: 220 },
  );
}

/** Log-axis ticks at 1, 2, 5 × 10^k within [lo, hi]; decades only when that is too many. */
function logTicks(lo: number, hi: number): number[] {
  const ticks: { v: number; m: number }[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++)
    for (const m of [1, 2, 5]) {
      const v = Number((m * 10 ** e).toPrecision(3));
      if (v >= lo && v <= hi) ticks.push({ v, m });
    }
  return (ticks.length > 10 ? ticks.filter((t) => t.m === 1) : ticks).map((t) => t.v);
}

function faultLatencySpec(report: Report, layout: Layout): TopLevelSpec | null {
  const rows: object[] = [];
  const vmsWithData = new Set<string>();
  report.migrations.forEach((m, id) => {
    const buckets = tuples(m.faultLatencyHistogram, 2)
      .filter(([ub, n]) => ub > 0 && n >= 0)
      .sort((a, b) => a[0] - b[0]);
    const total = buckets.reduce((s, [, n]) => s + n, 0);
    if (total <= 0) return;
    const vm = str(m.vm);
    const variant = variantLabel(m.variant);
    vmsWithData.add(vm);
    // the first bucket starts at half its upper bound (powers of two), where the CDF is 0
    const first = buckets.findIndex(([, n]) => n > 0);
    let cum = 0;
    rows.push({ id, vm, variant, x: buckets[first][0] / 2 / 1000, f: 0 });
    for (const [ub, n] of buckets.slice(first)) {
      cum += n;
      rows.push({ id, vm, variant, x: ub / 1000, f: cum / total });
      if (cum >= total) break;
    }
  });
  if (rows.length === 0) return null;
  const xs = (rows as { x: number }[]).map((row) => row.x);
  const lo = Math.min(...xs);
  const hi = Math.max(...xs);
  const ticks = logTicks(lo, hi);
  const x = {
    field: 'x',
    type: 'quantitative',
    title: 'remote-fault latency, bucket upper bound (ms, log scale)',
    scale: { type: 'log', nice: false },
    axis: { ...(ticks.length >= 2 ? { values: ticks } : {}), format: '~g', labelOverlap: 'greedy' },
  };
  const y = { field: 'f', type: 'quantitative', title: 'fraction of faults ≤ x', axis: { format: '%' } };
  return facetByVm(
    layout.vms.filter((vm) => vmsWithData.has(vm)),
    rows,
    [
      {
        mark: { type: 'line', strokeWidth: 1.5 },
        encoding: { x, y, color: layout.colour, detail: { field: 'id', type: 'nominal' } },
      },
      {
        mark: { type: 'point', filled: true, size: 22 },
        encoding: { x, y, color: layout.colour, detail: { field: 'id', type: 'nominal' } },
      },
    ],
    // one latency axis for every VM, so their distributions compare at a glance
    { height: 240, sharedX: true },
  );
}

function vcpuSpec(report: Report, ws: WorkloadReport[], layout: Layout): TopLevelSpec | null {
  const rows: object[] = [];
  const cells = new Set<string>();
  for (const w of ws) {
    const vm = str(w.vm);
    const variant = variantLabel(w.variant);
    const bins = arr<Record<string, unknown>>(w.vcpu)
      .filter((b) => b && typeof b === 'object' && isNum(b.tMs))
      .map((b) => ({
        t: (b.tMs as number) / 1000,
        values: [b.busyMs, b.blockedMs, b.haltedMs].map((v) => (isNum(v) ? v : 0)),
      }));
    // averaging keeps each stack's total, unlike thinning each state on its own
    for (const { t, values } of coarsen(bins))
      VCPU_STATES.forEach((state, order) => {
        rows.push({ layer: 'area', vm, variant, t, state, order, v: values[order] });
      });
    if (bins.length > 0) cells.add(`${vm}\0${variant}`);
  }
  if (rows.length === 0) return null;
  rows.push(...switchoverRows(report.migrations, (vm, variant) => cells.has(`${vm}\0${variant}`)));
  const vms = layout.vms.filter((vm) => [...cells].some((c) => c.startsWith(`${vm}\0`)));
  const variants = layout.variants.filter((v) => [...cells].some((c) => c.endsWith(`\0${v}`)));
  // one VM: panels wrap four to a row
  const n = Math.max(1, vms.length > 1 ? variants.length : Math.min(4, variants.length));
  // independent y scales put an axis on every panel; a shared one only on the first
  const perPanel = vms.length > 1 ? 70 : 20;
  const width = Math.max(180, Math.min(FULL_WIDTH, Math.floor((FULL_WIDTH - 60) / n) - perPanel));
  const layer = [
    {
      transform: [{ filter: "datum.layer === 'area'" }],
      mark: { type: 'area', interpolate: 'step-after', clip: true },
      encoding: {
        x: timeX,
        // the stack sums to the bin's capacity (vCPUs × 100 ms): no rounding the top up
        y: {
          field: 'v',
          type: 'quantitative',
          stack: 'zero',
          title: 'vCPU-ms per 100 ms',
          scale: { nice: false },
        },
        color: {
          field: 'state',
          type: 'nominal',
          title: 'vCPU state',
          scale: { domain: [...VCPU_STATES], range: VCPU_COLOURS },
          legend: { orient: 'top' },
        },
        order: { field: 'order', type: 'quantitative' },
      },
    },
    {
      name: 'switchover',
      transform: [{ filter: "datum.layer === 'rule'" }],
      mark: { type: 'rule', strokeDash: [5, 3], strokeWidth: 1.5, color: '#333' },
      encoding: { x: timeX, description: { field: 'label' } },
    },
  ];
  // one VM: wrap the variants over rows of four; several: a grid of VM × variant
  const header = { labelFontSize: 12 };
  const facet: Record<string, unknown> =
    vms.length > 1
      ? {
          column: { field: 'variant', type: 'nominal', sort: variants, title: null, header },
          row: { field: 'vm', type: 'nominal', sort: vms, title: null, header },
        }
      : { field: 'variant', type: 'nominal', sort: variants, title: null, header };
  return {
    data: { values: rows },
    facet,
    ...(vms.length > 1 ? {} : { columns: 4 }),
    spec: { width, height: 150, layer },
    resolve: { scale: { x: 'independent', y: vms.length > 1 ? 'independent' : 'shared' } },
  } as TopLevelSpec;
}

const CONFIG = {
  font: 'system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif',
  background: 'white',
  padding: 8,
  axis: { labelFontSize: 11, titleFontSize: 11, titleFontWeight: 'normal', gridColor: '#eee' },
  legend: { labelFontSize: 11, titleFontSize: 11, orient: 'top', labelLimit: 260 },
  header: { labelFontSize: 12, labelFontWeight: 'bold' },
  view: { stroke: '#ddd' },
};

let chartCounter = 0;

/** Compiles a Vega-Lite spec and renders it to an SVG string without a browser. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const full = { ...spec, config: { ...CONFIG, ...(spec.config ?? {}) } } as TopLevelSpec;
  const vg = compile(full).spec;
  const view = new vega.View(vega.parse(vg as vega.Spec), { renderer: 'none' });
  try {
    const svg = await view.toSVG();
    // several SVGs share one document: give each its own clip-path and gradient ids
    const prefix = `ferry-chart${++chartCounter}-`;
    return svg
      .replace(/ id="([^"]+)"/g, (_m, id: string) => ` id="${prefix}${id}"`)
      .replace(/url\(#([^)]+)\)/g, (_m, id: string) => `url(#${prefix}${id})`);
  } finally {
    view.finalize();
  }
}

// ---------------------------------------------------------------- page

const CSS = `
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: #222; background: #fafafa; margin: 0; }
main { max-width: 1040px; margin: 0 auto; padding: 20px 28px 48px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 32px 0 6px; border-bottom: 1px solid #e5e5e5; padding-bottom: 4px; }
.meta { color: #666; margin: 0; }
.meta b { color: #222; font-weight: 600; }
p.caption { color: #555; margin: 0 0 8px; font-size: 13px; }
p.skip { color: #777; font-style: italic; margin: 4px 0; }
.table { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
th { background: #f3f4f6; font-weight: 600; border-bottom: 1px solid #ccc; white-space: normal;
  vertical-align: bottom; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.bad { color: #b3261e; font-weight: 600; }
td.warn { color: #a15c00; }
td[title] { cursor: help; }
ul.notes { margin: 8px 0 0; padding-left: 20px; color: #555; font-size: 13px; }
figure { margin: 8px 0 0; overflow-x: auto; }
figure svg { max-width: 100%; height: auto; }
footer { margin-top: 40px; color: #999; font-size: 12px; }
`;

function section(title: string, caption: string | null, body: string): string {
  const p = caption === null ? '' : `<p class="caption">${escapeHtml(caption)}</p>\n`;
  return `<section>\n<h2>${escapeHtml(title)}</h2>\n${p}${body}\n</section>`;
}

/** A chart section, or its title and a one-line note when the report has no data for it. */
async function chartSection(
  title: string,
  caption: string,
  spec: TopLevelSpec | null,
  skipNote: string,
): Promise<string> {
  if (spec === null) return section(title, null, `<p class="skip">${escapeHtml(skipNote)}</p>`);
  return section(title, caption, `<figure>${await renderSvg(spec)}</figure>`);
}

/** The whole page: header, comparison tables and four charts, each skipped with a note when empty. */
export async function renderHtml(report: Report): Promise<string> {
  const migrations = arr<MigrationReport>(report.migrations).filter((m) => m && typeof m === 'object');
  const workloads = arr<WorkloadReport>(report.workloads).filter((w) => w && typeof w === 'object');
  const r: Report = { ...report, migrations, workloads };
  const vms = firstSeen([...migrations, ...workloads].map((x) => str(x.vm)));
  const variants = firstSeen([...migrations, ...workloads].map((x) => variantLabel(x.variant)));
  const layout: Layout = {
    vms,
    variants,
    colour: {
      field: 'variant',
      type: 'nominal',
      scale: { domain: variants, range: PALETTE },
      // one variant needs no key
      legend: variants.length > 1 ? { title: 'variant', orient: 'right', columns: 1 } : null,
    },
  };

  const charts = await Promise.all([
    chartSection(
      'Throughput over time',
      'Completed operations per second in 100 ms bins, one line per workload, coloured by variant; dashed rules mark each variant’s switchover.',
      throughputSpec(r, workloads, layout),
      'No workload throughput in this report: chart skipped.',
    ),
    chartSection(
      'Pages missing on the destination',
      'Pages not yet on the destination, sampled every 100 ms; dashed rules mark switchover.',
      missingPagesSpec(r, layout),
      'No missing-page samples in this report: chart skipped.',
    ),
    chartSection(
      'Remote-fault latency',
      'Cumulative distribution of remote-fault latency per migration; points are histogram bucket upper bounds (powers of two), lines join them.',
      faultLatencySpec(r, layout),
      'No remote faults in this report: chart skipped.',
    ),
    chartSection(
      'vCPU state over time',
      'vCPU time per 100 ms bin (averaged over longer spans in long runs), summed over the VM’s vCPUs: busy, blocked on remote faults, or halted; one chart per variant, the dashed rule marks switchover.',
      vcpuSpec(r, workloads, layout),
      'No vCPU time series in this report: chart skipped.',
    ),
  ]);

  const title = `Ferry report: ${str(report.scenario)}`;
  const plural = (n: number, w: string) => `${n} ${w}${n === 1 ? '' : 's'}`;
  const parts = [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    // nothing on the page loads from anywhere: inline styles and inline SVG only
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline';>`,
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${escapeHtml(title)}</title>`,
    `<style>${CSS}</style>`,
    '</head>',
    '<body>',
    '<main>',
    '<header>',
    `<h1>${escapeHtml(title)}</h1>`,
    `<p class="meta">world <b>${escapeHtml(str(report.world))}</b> · seed <b>${escapeHtml(str(report.seed))}</b> · ` +
      `${plural(migrations.length, 'migration')} · ${plural(workloads.length, 'workload')}</p>`,
    '</header>',
    section(
      'Migrations',
      'One row per migration. Hover an outcome for its reason; fault latency is request to arrival.',
      migrations.length > 0
        ? migrationTable(migrations) + notCompleted(migrations)
        : '<p class="skip">No migrations in this report.</p>',
    ),
  ];
  if (workloads.length > 0)
    parts.push(
      section(
        'Throughput after switchover',
        'Throughput in the first 1, 5 and 10 s after switchover, relative to the rate before the migration began.',
        workloadTable(workloads),
      ),
    );
  parts.push(...charts, '<footer>Rendered by ferry report.</footer>', '</main>', '</body>', '</html>', '');
  return parts.join('\n');
}
