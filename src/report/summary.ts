// Terminal rendering of a report: one line per migration, aligned columns.

import type { MigrationReport, Report } from './schema.ts';

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatMs(ms: number): string {
  if (ms >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 10) return `${ms.toFixed(0)} ms`;
  return `${ms.toFixed(2)} ms`;
}

/** Renders rows as a table with a header rule; numbers right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const numeric = /^[-+]?[\d.,]+(\s?(%|ms|s|B|KiB|MiB|GiB|TiB))?(\/[\d.,]+)?$/;
  const right = header.map((_, i) => rows.every((r) => numeric.test(r[i]) || r[i] === ''));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (right[i] ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function row(m: MigrationReport): string[] {
  const p = m.pagesSent;
  return [
    m.vm,
    m.variant,
    m.mode,
    `${m.source}→${m.destination}`,
    m.outcome,
    formatMs(m.totalTimeMs),
    formatMs(m.downtimeMs),
    formatBytes(m.bytesSent),
    String(m.rounds),
    String(p.resent),
    String(m.remoteFaults),
    m.remoteFaults > 0
      ? `${(m.faultLatencyUs.p50 / 1000).toFixed(2)}/${(m.faultLatencyUs.p99 / 1000).toFixed(2)}`
      : '',
  ];
}

const HEADER = [
  'vm',
  'variant',
  'mode',
  'route',
  'outcome',
  'total',
  'downtime',
  'sent',
  'rounds',
  'resent',
  'faults',
  'fault ms p50/p99',
];

/** Summary of a report; large runs show the first rows and aggregates. */
export function summarize(report: Report, maxRows = 40): string {
  const ms = report.migrations;
  const shown = ms.slice(0, maxRows);
  const out = [
    `${report.scenario} (${report.world}, seed ${report.seed}): ${ms.length} migration${ms.length === 1 ? '' : 's'}`,
  ];
  const hasVariant = shown.some((m) => m.variant);
  let header = HEADER;
  let rows = shown.map(row);
  if (!hasVariant) {
    header = HEADER.filter((_, i) => i !== 1);
    rows = rows.map((r) => r.filter((_, i) => i !== 1));
  }
  out.push(table(header, rows));
  if (ms.length > shown.length) out.push(`… ${ms.length - shown.length} more (see the JSON report)`);
  const by = new Map<string, number>();
  for (const m of ms) by.set(m.outcome, (by.get(m.outcome) ?? 0) + 1);
  const done = ms.filter((m) => m.outcome === 'completed');
  const mean = (f: (m: MigrationReport) => number) =>
    done.reduce((s, m) => s + f(m), 0) / Math.max(1, done.length);
  out.push(
    `outcomes: ${[...by].map(([k, v]) => `${v} ${k}`).join(', ')}` +
      (done.length > 0
        ? `; completed: mean total ${formatMs(mean((m) => m.totalTimeMs))}, mean downtime ${formatMs(mean((m) => m.downtimeMs))}`
        : ''),
  );
  const notes = ms.filter((m) => m.outcome !== 'completed').slice(0, 5);
  for (const m of notes) out.push(`  ${m.vm}: ${m.outcome}: ${m.reason}`);
  return out.join('\n');
}

const pct = (x: number | undefined) => (x === undefined ? '' : `${Math.round(x * 100)}%`);

/**
 * One row per variant (and VM): what the migration cost and what the workload kept of its
 * throughput right after the switchover.
 */
export function compareVariants(report: Report): string {
  const rows = report.migrations.map((m) => {
    const w = report.workloads.find((x) => x.vm === m.vm && x.variant === m.variant);
    const rel = w?.relativeThroughput ?? undefined;
    return [
      m.variant,
      m.vm,
      m.outcome,
      formatMs(m.totalTimeMs),
      formatMs(m.downtimeMs),
      formatBytes(m.bytesSent),
      String(m.remoteFaults),
      m.remoteFaults > 0
        ? `${(m.faultLatencyUs.p50 / 1000).toFixed(2)}/${(m.faultLatencyUs.p99 / 1000).toFixed(2)}`
        : '',
      pct(rel?.first1s),
      pct(rel?.first5s),
      pct(rel?.first10s),
    ];
  });
  return table(
    [
      'variant',
      'vm',
      'outcome',
      'total',
      'downtime',
      'sent',
      'faults',
      'fault ms p50/p99',
      '1 s',
      '5 s',
      '10 s',
    ],
    rows,
  );
}
