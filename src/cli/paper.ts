// The paper experiment's configuration, in both worlds: each app (kv under redis-benchmark,
// http under wrk) moves by precopy, postcopy with blocking faults and postcopy with
// cooperative faults over a 1 Gbit/s link. The real runs go through the lab (or loopback);
// the simulated ones run the same VMs (the simulator's `kv` and `http` workloads lay out
// guest RAM as the real apps do) with the server speed and set-up time measured in the
// real runs when there are some, and the measured-versus-simulated comparison per metric.

import type { MigrationMode } from '../engine/config.ts';
import type { ClientKind } from '../lab/clients.ts';
import { fillSize, type TrialResult, wayThroughHosts } from '../lab/trial.ts';
import type { MigrationReport, Report } from '../report/schema.ts';
import { formatBytes, formatMs, table } from '../report/summary.ts';
import { BIN_MS } from '../report/throughput.ts';
import { type Scenario, type ScenarioVariant, validateScenario } from '../sim/scenario.ts';
import { HTTP_DEFAULTS, HttpLayout, KV_DEFAULTS, KvLayout } from '../sim/workloads.ts';
import { simulate } from '../sim/world.ts';

export interface PaperApp {
  app: 'kv' | 'http';
  client: ClientKind;
}

export interface PaperVariant {
  name: string;
  mode: MigrationMode;
  cooperative: boolean;
}

export const PAPER = {
  ramMiB: 256,
  vcpus: 2,
  /** Server tasks per vCPU (the hosts' default). */
  servers: 8,
  fillMiB: 96,
  connections: 16,
  linkMbps: 1000,
  warmupMs: 4000,
  afterMs: 4000,
  apps: [
    { app: 'kv', client: 'redis-benchmark' },
    { app: 'http', client: 'wrk' },
  ] as PaperApp[],
  variants: [
    { name: 'precopy', mode: 'precopy', cooperative: true },
    { name: 'postcopy-blocking', mode: 'postcopy', cooperative: false },
    { name: 'postcopy-cooperative', mode: 'postcopy', cooperative: true },
  ] as PaperVariant[],
};

export type PaperConfig = typeof PAPER;

/** The same experiment on smaller VMs and shorter runs (tests, a first look). */
export const PAPER_QUICK: PaperConfig = { ...PAPER, ramMiB: 64, fillMiB: 16, warmupMs: 2500, afterMs: 1500 };

/** One-way latency of a lab host's link (veth pairs on a bridge, through the hosts' stacks). */
const LAB_LATENCY_US = 50;

/** A run's label: app and variant. */
export const runName = (a: PaperApp, v: PaperVariant) => `${a.app}-${v.name}`;

/**
 * Pages a freshly filled app holds (its layout, as the real app lays it out, plus a page
 * per vCPU for the guest kernel): what a migration must send when nothing was measured.
 */
export function footprintPages(config: PaperConfig, app: 'kv' | 'http'): number {
  const ramPages = config.ramMiB * 256;
  const { keys, objects } = fillSize(config.fillMiB);
  const bytes =
    app === 'kv'
      ? (() => {
          const l = new KvLayout(
            { ...KV_DEFAULTS, keys, valueBytes: 1000 },
            ramPages,
            ramPages,
            config.vcpus,
          );
          return l.heapStart + keys * l.blockSize;
        })()
      : new HttpLayout({ ...HTTP_DEFAULTS, objects }, ramPages, ramPages, config.vcpus).counterTable +
        HTTP_DEFAULTS.counters * 4;
  return config.vcpus + Math.ceil(bytes / 4096);
}

/** What the simulator takes from a real run of the same configuration. */
export interface Measured {
  /** Requests per second before the migration. */
  baselineOpsPerSec: number;
  /** The guest's CPU per request before the migration (ms; 0: not measured). */
  cpuMsPerRequest: number;
  /** Before the migration, the vCPU threads' wait for a core ÷ their time on one. */
  baselineContention: number;
  /** Pages in use (not zero) when the migration began. */
  usedPages: number;
  /** From the request to the first page: the destination boots, the lanes connect. */
  setupMs: number;
  /**
   * Mean remote-fault latency (µs, postcopy; 0 otherwise), from the latency histogram: on a
   * busy host it is mostly the time the hosts take to notice and serve a demand, not the
   * wire's.
   */
  faultLatencyUs: number;
  /**
   * How much slower the guest's work ran while pages moved: in postcopy, its vCPU threads'
   * wait for a host core per ms on one (the scheduler's statistics); in precopy, from the
   * app's precopy run, 1 ÷ (throughput during it ÷ before) − 1.
   */
  hostContention: number;
  /**
   * In postcopy, the share of the postcopy the destination host's main thread ran (it
   * installs the pages and carries the VM's connections); 0 otherwise (precopy's
   * contention, measured from the app's rate, already counts it).
   */
  hostBusy: number;
  /**
   * What a remote fault keeps its vCPU (blocking) or task (async) waiting beyond the
   * demand's latency (µs): the fault's way to the host and the page's way back into the
   * guest. From the run's own vCPUs: blocked time per blocking fault, or parked time per
   * async fault, less the mean latency.
   */
  faultWakeUs: number;
  /**
   * What an async fault cost the guest's vCPUs on a host core beyond its request's work (µs):
   * their time on a core over a cooperative postcopy less the requests' CPU at the
   * baseline's rate per request, per fault (0: no async faults).
   */
  asyncFaultCpuUs: number;
  /**
   * What the destination's downlink held queued while the pages came in, mean µs (0: not
   * measured): the clients' requests to the VM there waited it out.
   */
  downlinkQueueUs?: number;
  /**
   * In postcopy, how many times as long the clients' way through the hosts took as before
   * the migration (0: not measured): their time outside the guest, less the destination
   * downlink's queue (the twin's host carries that), and crossing between the host's
   * thread and the vCPUs', per request.
   */
  pathSlowdown?: number;
}

/** Mean of a latency histogram ([upper bound, count] per power-of-two bucket), at ¾ of each bound. */
function meanOf(histogram: [number, number][]): number {
  let n = 0;
  let sum = 0;
  for (const [upper, count] of histogram) {
    n += count;
    sum += count * upper * 0.75;
  }
  return n > 0 ? sum / n : 0;
}

/**
 * The run's mean demand latency (µs): measured, or from the histogram for reports that
 * carry no mean (at ¾ of each power-of-two bucket's bound, off by up to a third).
 */
function meanLatencyUs(m: TrialResult['migration']): number {
  const mean = m.faultLatencyUs?.mean;
  return typeof mean === 'number' && mean > 0 ? mean : meanOf(m.faultLatencyHistogram);
}

/** What the run's faults kept the guest waiting beyond the demands' mean latency (µs). */
function faultWakeUs(m: TrialResult['migration']): number {
  if (m.mode !== 'postcopy') return 0;
  const waitUs =
    m.cooperative && m.asyncFaults > 0
      ? (m.vcpuParkedMs * 1000) / m.asyncFaults
      : m.syncFaults > 0
        ? (m.vcpuBlockedMs * 1000) / m.syncFaults
        : 0;
  return waitUs > 0 ? Math.max(0, waitUs - meanLatencyUs(m)) : 0;
}

/** The vCPUs' time on a core per async fault beyond what the postcopy's requests took (µs). */
function asyncFaultCpuUs(t: TrialResult, cpuMsPerRequest: number): number {
  const m = t.migration;
  if (m.mode !== 'postcopy' || !m.cooperative || m.asyncFaults === 0) return 0;
  const requestsMs = postcopyRequests(t.report, m) * cpuMsPerRequest;
  return (Math.max(0, m.vcpuRunMs - requestsMs) * 1000) / (m.asyncFaults + m.syncFaults);
}

/** See Measured.pathSlowdown. */
function pathSlowdown(t: TrialResult): number {
  const { baseline, postcopy } = t.requestTimes ?? {};
  if (!baseline?.requests || !postcopy?.requests) return 0;
  const before = wayThroughHosts(baseline);
  return before > 0 ? wayThroughHosts(postcopy, (t.downlinkQueueUs ?? 0) / 1000) / before : 0;
}

/** The destination's main thread's time on a core over the postcopy, as a share of it. */
function hostBusy(m: TrialResult['migration']): number {
  if (m.mode !== 'postcopy' || m.switchoverMs < 0) return 0;
  // the trial's times are the run's: the switchover counts from the run's start
  const postcopyMs = m.totalTimeMs - (m.switchoverMs - m.startMs) - m.downtimeMs;
  return postcopyMs > 0 ? Math.min(0.95, Math.max(0, (m.hostRunMs ?? 0) / postcopyMs)) : 0;
}

/** The measured configuration of each real trial (by run name), for its simulated twin. */
export function measuredRuns(trials: TrialResult[]): Map<string, Measured> {
  const contention = new Map<string, number>();
  for (const t of trials) {
    const m = t.migration;
    if (m.mode !== 'precopy' || t.dip.baselineOpsPerSec <= 0) continue;
    const bins = t.workload.throughput.filter(([tMs]) => tMs >= m.startMs && tMs < m.startMs + m.totalTimeMs);
    if (bins.length === 0) continue;
    // ops/s over the migration, the stop's downtime left out
    const ops = bins.reduce((n, [, r]) => n + r * (BIN_MS / 1000), 0);
    const during = ops / Math.max(0.001, (bins.length * BIN_MS - m.downtimeMs) / 1000);
    contention.set(t.workload.kind, Math.max(0, t.dip.baselineOpsPerSec / Math.max(1, during) - 1));
  }
  return new Map(
    trials.map((t) => {
      const m = t.migration;
      const cpuMsPerRequest = t.memory.requests > 0 ? t.memory.vcpuRunMs / t.memory.requests : 0;
      return [
        m.variant,
        {
          baselineOpsPerSec: t.dip.baselineOpsPerSec,
          cpuMsPerRequest,
          baselineContention: t.memory.vcpuRunMs > 0 ? (t.memory.vcpuWaitMs ?? 0) / t.memory.vcpuRunMs : 0,
          usedPages: t.memory.pages - t.memory.zeroPages,
          setupMs: m.setupMs,
          faultLatencyUs: meanLatencyUs(m),
          // postcopy: the destination's vCPU threads' wait for a core ÷ their time on one (a
          // thread that waits w for every r it runs works at r ÷ (r + w) of its speed);
          // precopy: the slowdown of the app's precopy run
          hostContention:
            m.mode === 'postcopy' && m.vcpuRunMs > 0
              ? m.vcpuWaitMs / m.vcpuRunMs
              : (contention.get(t.workload.kind) ?? 0),
          hostBusy: hostBusy(m),
          faultWakeUs: faultWakeUs(m),
          asyncFaultCpuUs: asyncFaultCpuUs(t, cpuMsPerRequest),
          downlinkQueueUs: t.downlinkQueueUs ?? 0,
          pathSlowdown: pathSlowdown(t),
        },
      ];
    }),
  );
}

/**
 * Requests per second of a closed loop of `n` clients whose requests each spend `pathMs`
 * outside the server (on average), served one at a time at `cpuMs` a request: mean value
 * analysis, exact for exponential service times.
 */
export function closedLoopRate(n: number, cpuMs: number, pathMs: number): number {
  let queued = 0;
  let rate = 0;
  for (let k = 1; k <= n; k++) {
    const response = cpuMs * (1 + queued);
    rate = k / (pathMs + response);
    queued = rate * response;
  }
  return rate * 1000;
}

/**
 * The twin's clients and server. The apps serve one handler at a time whatever the vCPUs
 * (their lock); the guest's CPU per request, measured before the migration, sets the
 * server's speed. What the clients' cycle has beyond that is the request's way through
 * the hosts (client, switch, host threads): the request path time with which the
 * simulated loop gives the measured rate. Without it every connection would queue in
 * the guest, and in postcopy more of them would fault at once than really do. Not
 * measured: a server just fast enough for the rate, no path.
 */
export function clientLoop(connections: number, m: Measured | undefined): { cpuMs: number; pathMs: number } {
  const rate = m?.baselineOpsPerSec ?? 0;
  if (!(rate > 0)) return { cpuMs: 0.1, pathMs: 0 };
  const saturated = 1000 / rate;
  // the vCPU's time per request on a core, and its wait for one (the host is shared)
  const measured = (m?.cpuMsPerRequest ?? 0) * (1 + (m?.baselineContention ?? 0));
  const cpuMs = measured > 0 ? Math.min(measured, saturated) : saturated;
  if (closedLoopRate(connections, cpuMs, 0) <= rate) return { cpuMs, pathMs: 0 };
  // the rate falls as the path grows: bisect
  let lo = 0;
  let hi = (connections * 1000) / rate;
  for (let i = 0; i < 50; i++) {
    const mid = (lo + hi) / 2;
    if (closedLoopRate(connections, cpuMs, mid) > rate) lo = mid;
    else hi = mid;
  }
  return { cpuMs, pathMs: (lo + hi) / 2 };
}

/**
 * The twin with its request path less what the simulator itself puts between a reply and
 * the next request (the reply's way to the client over the host's link): a short run
 * without the migration measures the simulated rate, and the path takes up the
 * difference in the clients' cycle.
 */
function pathFitted(scenario: Scenario, rate: number): Scenario {
  const vm = scenario.vms[0];
  const w = vm?.workload as { connections?: number; pathMs?: number } | undefined;
  if (!(rate > 0) || !w?.connections || !w.pathMs) return scenario;
  const probe = simulate({ ...scenario, migrations: [], durationS: 3 }, { seed: 1 });
  const bins = probe.workloads[0].throughput.filter(([t]) => t >= 500 && t < 3000);
  const simulated = bins.reduce((n, [, perSec]) => n + perSec, 0) / Math.max(1, bins.length);
  if (!(simulated > 0)) return scenario;
  const cycleMs = (x: number) => (w.connections! * 1000) / x;
  const pathMs = Math.max(0, w.pathMs + cycleMs(rate) - cycleMs(simulated));
  const workload = { ...vm.workload, pathMs } as typeof vm.workload;
  return { ...scenario, vms: [{ ...vm, workload }, ...scenario.vms.slice(1)] };
}

/** What the calibration measured: an idle VM holding `dataMiB` of data moved by precopy. */
export interface CalibrationRun {
  dataMiB: number;
  setupMs: number;
  totalMs: number;
}

/**
 * The twins' two hosts: the lab's links, with the standing queue a flow that fills one
 * keeps in its sender's buffer, or on loopback links far faster than the line rate (the
 * migration then carries its own cap, and fills no link the clients use).
 */
function twinHosts(config: PaperConfig, loopback: boolean, uplinkQueueUs = 0, downlinkQueueUs = 0) {
  const nicMbps = loopback ? 100 * config.linkMbps : config.linkMbps;
  const host = { nicMbps, latencyUs: LAB_LATENCY_US, uplinkQueueUs: loopback ? 0 : uplinkQueueUs };
  return [
    { name: 'a', ...host },
    { name: 'b', ...host, downlinkQueueUs: loopback ? 0 : downlinkQueueUs },
  ];
}

/** The calibration's migration in the simulator, over a link of this efficiency. */
export function calibrationTwin(
  config: PaperConfig,
  cal: CalibrationRun,
  efficiency: number,
  loopback = false,
): Scenario {
  return validateScenario(
    {
      name: 'calibration',
      durationS: 600,
      ...(loopback ? {} : { network: { efficiency } }),
      hosts: twinHosts(config, loopback),
      vms: [
        {
          name: 'calibration',
          host: 'a',
          ramMiB: config.ramMiB,
          usedMiB: Math.min(config.ramMiB, cal.dataMiB),
          vcpus: config.vcpus,
          workload: { kind: 'idle' },
          dirty: { rateMBps: 0, hotSetMiB: 1 },
        },
      ],
      migrations: [
        {
          vm: 'calibration',
          to: 'b',
          atS: 0,
          mode: 'precopy',
          setupMs: cal.setupMs,
          ...(loopback ? { maxBandwidthMbps: config.linkMbps * efficiency } : {}),
        },
      ],
    },
    'calibration twin',
  );
}

/**
 * The simulated link's efficiency with which the twin of the calibration takes as long as
 * the real one did. The simulator then carries the migration's fixed costs (set-up, the
 * rounds' ends, the stop-and-copy, the last round trips) itself; dividing the
 * calibration's bytes by its time would count them again in every page (a tenth of the
 * rate on a 100 MiB migration), and every simulated run would take that much longer.
 */
export function fittedEfficiency(config: PaperConfig, cal: CalibrationRun, loopback = false): number {
  const total = (efficiency: number) =>
    simulate(calibrationTwin(config, cal, efficiency, loopback), { seed: 1 }).migrations[0]?.totalTimeMs ??
    Number.NaN;
  // the simulated time falls as the efficiency grows: bisect
  let lo = 0.05;
  let hi = 1;
  if (!(total(hi) < cal.totalMs)) return 1;
  if (!(total(lo) > cal.totalMs)) return lo;
  for (let i = 0; i < 30; i++) {
    const mid = (lo + hi) / 2;
    if (total(mid) > cal.totalMs) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/**
 * How much the migration slows the twin's guest and its clients' path. The twin already
 * runs at the speed the host left it before the migration (its CPU per request with the
 * wait for a core, the path fitted to the rate): a postcopy slows it by how much more its
 * vCPUs waited for a core than before; precopy's measure (the app's rate during it against
 * before) is relative already.
 */
function twinContention(mode: MigrationMode, m: Measured | undefined): number {
  if (!m) return 0;
  if (mode !== 'postcopy') return m.hostContention;
  return Math.max(0, (1 + m.hostContention) / (1 + (m.baselineContention ?? 0)) - 1);
}

/**
 * How much the migration slows the twin's clients' way through the hosts: in a postcopy,
 * as measured when it was (the host's threads it crosses wait for cores, the destination's
 * main thread installs pages meanwhile, and how much that costs a request is hard to
 * foresee); otherwise as the host contention and the destination's busy share make it.
 */
function twinPath(
  mode: MigrationMode,
  m: Measured | undefined,
): { pathContention: number } | { hostBusy: number } {
  if (mode === 'postcopy' && m?.pathSlowdown) return { pathContention: Math.max(0, m.pathSlowdown - 1) };
  return { hostBusy: m?.hostBusy ?? 0 };
}

/** The link the real runs had. */
export interface PaperLink {
  /** Pages' goodput ÷ line rate (default: TCP over Ethernet). */
  efficiency?: number;
  /** What a flow filling a host's uplink keeps queued there, µs (default: none). */
  uplinkQueueUs?: number;
  /**
   * Hosts on loopback, only the migration capped at the line rate (by the source): the
   * clients' traffic shares no link with it.
   */
  loopback?: boolean;
}

/**
 * The simulated experiment: one scenario per run, each VM with the app's workload over a
 * 1 Gbit/s link. `measured` (by run name) sets each VM's memory in use, its server speed
 * (CPU per request, from the measured request rate), its set-up time, the hosts' demand
 * latency and how much the migration slowed the guest (host contention) and its clients'
 * way through the hosts (twinPath); `link` the lab's efficiency and uplink queue.
 */
export function paperScenarios(
  config: PaperConfig,
  measured: Map<string, Measured> = new Map(),
  link: PaperLink = {},
): ScenarioVariant[] {
  const { efficiency, loopback } = link;
  // on loopback the hosts' links are fast and the migration carries its own cap
  const cap = loopback ? { maxBandwidthMbps: config.linkMbps * (efficiency ?? 1) } : {};
  const out: ScenarioVariant[] = [];
  for (const a of config.apps)
    for (const v of config.variants) {
      const name = runName(a, v);
      const m = measured.get(name);
      const workers = config.vcpus * config.servers;
      const { cpuMs, pathMs } = clientLoop(config.connections, m);
      const { keys, objects } = fillSize(config.fillMiB);
      const workload =
        a.app === 'kv'
          ? { kind: 'kv', workers, connections: config.connections, pathMs, cpuMs, keys, valueBytes: 1000 }
          : { kind: 'http', workers, connections: config.connections, pathMs, cpuMs, objects };
      const warmS = config.warmupMs / 1000;
      // a demand's round trip is twice the path's latency (both hosts' share) plus the
      // page's time on the wire; the rest of the measured mean is the hosts' time to
      // notice and answer it (the path itself, shared with the clients' replies, is the
      // lab's: a bridge between namespaces)
      const pageUs = (4096 * 8) / config.linkMbps;
      const latencyUs = LAB_LATENCY_US;
      const demandDelayUs = m ? Math.max(0, m.faultLatencyUs - pageUs - 4 * latencyUs) : 0;
      const raw = {
        name,
        durationS: 600,
        settleS: config.afterMs / 1000,
        ...(efficiency && !loopback ? { network: { efficiency } } : {}),
        hosts: twinHosts(config, !!loopback, link.uplinkQueueUs, m?.downlinkQueueUs),
        vms: [
          {
            name: `${a.app}`,
            host: 'a',
            ramMiB: config.ramMiB,
            usedMiB: Math.max(1, (m?.usedPages ?? footprintPages(config, a.app)) / 256),
            vcpus: config.vcpus,
            hostContention: twinContention(v.mode, m),
            ...twinPath(v.mode, m),
            faultWakeUs: m?.faultWakeUs ?? 0,
            ...(m?.asyncFaultCpuUs
              ? { asyncFaultCpuUs: m.asyncFaultCpuUs * (1 + (m.baselineContention ?? 0)) }
              : {}),
            workload,
            dirty: { rateMBps: 0, hotSetMiB: 1 },
          },
        ],
        migrations: [
          {
            vm: a.app,
            to: 'b',
            atS: warmS,
            mode: v.mode,
            cooperative: v.cooperative,
            prepageForward: 7,
            setupMs: m?.setupMs ?? 0,
            demandDelayUs,
            ...cap,
          },
        ],
      };
      const scenario = validateScenario(raw, `paper ${name}`);
      out.push({ name, scenario: pathFitted(scenario, m?.baselineOpsPerSec ?? 0) });
    }
  return out;
}

// --- measured versus simulated -------------------------------------------------------------

export interface Agreement {
  run: string;
  metric: string;
  measured: number;
  simulated: number;
  /** simulated ÷ measured (NaN when nothing was measured). */
  ratio: number;
}

/** The metrics the 15% target applies to; the others explain the differences. */
const TARGETS = new Set(['total time', 'bytes', 'remote faults']);

const METRICS: {
  name: string;
  of: (m: MigrationReport, requests: number) => number;
  show: (x: number) => string;
  postcopyOnly?: boolean;
}[] = [
  { name: 'total time', of: (m) => m.totalTimeMs, show: formatMs },
  { name: 'bytes', of: (m) => m.bytesSent, show: formatBytes },
  { name: 'remote faults', of: (m) => m.remoteFaults, show: (x) => String(Math.round(x)) },
  { name: 'downtime', of: (m) => m.downtimeMs, show: formatMs },
  { name: 'requests in postcopy', of: (_, n) => n, show: (x) => String(Math.round(x)), postcopyOnly: true },
  {
    name: 'faults / request',
    of: (m, n) => (n > 0 ? m.remoteFaults / n : 0),
    show: (x) => x.toFixed(2),
    postcopyOnly: true,
  },
];

/** Requests the VM answered from the switchover until the last page arrived. */
function postcopyRequests(report: Report, m: MigrationReport): number {
  const w = report.workloads.find((x) => x.variant === m.variant);
  if (!w || m.switchoverMs < 0) return 0;
  const end = m.startMs + m.totalTimeMs;
  let n = 0;
  for (const [t, perSec] of w.throughput) if (t >= m.switchoverMs && t < end) n += perSec * (BIN_MS / 1000);
  return n;
}

/** The metrics of every run found in both reports. */
export function agreement(real: Report, sim: Report): Agreement[] {
  const out: Agreement[] = [];
  for (const r of real.migrations) {
    const s = sim.migrations.find((x) => x.variant === r.variant);
    if (!s) continue;
    const nr = postcopyRequests(real, r);
    const ns = postcopyRequests(sim, s);
    for (const metric of METRICS) {
      if (metric.postcopyOnly && r.mode !== 'postcopy') continue;
      const measured = metric.of(r, nr);
      const simulated = metric.of(s, ns);
      out.push({
        run: r.variant,
        metric: metric.name,
        measured,
        simulated,
        ratio: measured > 0 ? simulated / measured : measured === simulated ? 1 : Number.NaN,
      });
    }
  }
  return out;
}

/** The share of target metrics within 15%. */
export function withinTarget(rows: Agreement[]): { within: number; of: number } {
  const target = rows.filter((a) => TARGETS.has(a.metric));
  return { within: target.filter((a) => Math.abs(a.ratio - 1) <= 0.15).length, of: target.length };
}

export function agreementTable(rows: Agreement[]): string {
  const show = (metric: string, x: number) => METRICS.find((m) => m.name === metric)!.show(x);
  return table(
    ['run', 'metric', 'measured', 'simulated', 'sim ÷ real', ''],
    rows.map((r) => [
      r.run,
      r.metric,
      show(r.metric, r.measured),
      show(r.metric, r.simulated),
      Number.isFinite(r.ratio) ? r.ratio.toFixed(2) : '—',
      !TARGETS.has(r.metric) ? '' : Math.abs(r.ratio - 1) <= 0.15 ? 'within 15%' : 'off',
    ]),
  );
}
