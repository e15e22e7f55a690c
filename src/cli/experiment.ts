// `ferry experiment paper`: the comparison of precopy, postcopy with blocking faults and
// postcopy with cooperative faults, with real clients against real VMs (`--real`), in the
// simulator (`--sim`), or both side by side (`--both`).

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { calibrateMigration } from '../lab/calibrate.ts';
import { pickClient } from '../lab/clients.ts';
import { type LabEnd, measureGoodput } from '../lab/goodput.ts';
import { isRoot, startLab } from '../lab/lab.ts';
import { type Cluster, startLoopback } from '../lab/loopback.ts';
import { type Dip, type RequestTimes, runTrial, type TrialResult, wayThroughHosts } from '../lab/trial.ts';
import { warmHosts } from '../lab/warmup.ts';
import type { Report } from '../report/schema.ts';
import { compareVariants, formatMs, table } from '../report/summary.ts';
import { simulateVariants } from '../sim/variants.ts';
import { UsageError } from './errors.ts';
import { writeJson, writeText } from './io.ts';
import {
  agreement,
  agreementTable,
  fittedEfficiency,
  type Measured,
  measuredRuns,
  PAPER,
  PAPER_QUICK,
  type PaperConfig,
  paperScenarios,
  runName,
  withinTarget,
} from './paper.ts';

export interface ExperimentOptions {
  real?: boolean;
  sim?: boolean;
  both?: boolean;
  loopback?: boolean;
  quick?: boolean;
  json?: string;
  html?: string;
}

export async function experimentCommand(name: string, opts: ExperimentOptions): Promise<void> {
  if (name !== 'paper') throw new UsageError(`unknown experiment '${name}' (known: paper)`);
  const chosen = [opts.real, opts.sim, opts.both].filter(Boolean).length;
  if (chosen !== 1) throw new UsageError('choose one of --real, --sim, --both');
  const config = opts.quick ? PAPER_QUICK : PAPER;
  const out: {
    real?: Report;
    /** Per real run: what its clients saw and how its throughput dipped. */
    runs?: {
      run: string;
      client: string;
      requests: number;
      errors: number;
      connectionsLost: number;
      dip: Dip;
      requestTimes: TrialResult['requestTimes'];
      downlinkQueueUs?: number;
    }[];
    sim?: Report;
    agreement?: ReturnType<typeof agreement>;
    /** The real runs' link and hosts: what they carry when nothing else runs. */
    link?: Link;
    /** What each simulated twin took from its real run (by run name). */
    measured?: Record<string, Measured>;
  } = {};
  let trials: TrialResult[] = [];
  if (opts.real || opts.both) {
    const real = await runReal(config, opts.loopback ?? false);
    trials = real.trials;
    out.link = real.link;
    out.real = merged('paper (real)', 'real', trials);
    out.runs = trials.map((t) => ({
      run: t.migration.variant,
      client: t.clients.tool,
      requests: t.clients.requests,
      errors: t.clients.errors,
      connectionsLost: t.clients.connectionsLost,
      dip: t.dip,
      requestTimes: t.requestTimes,
      downlinkQueueUs: t.downlinkQueueUs,
    }));
    console.log(`\nMeasured:\n${compareVariants(out.real)}`);
    console.log(dipTable(trials));
  }
  if (opts.sim || opts.both) {
    const measured = measuredRuns(trials);
    if (measured.size) out.measured = Object.fromEntries(measured);
    console.log(
      `\nSimulating the same configuration${measured.size ? ' (memory in use, server speed, set-up time, demand latency, fault wake-up and CPU, host contention, the clients’ way through the hosts, uplink and downlink queues as measured)' : ''}…`,
    );
    out.sim = await simulateVariants(paperScenarios(config, measured, out.link), { seed: 1 });
    out.sim.scenario = 'paper (sim)';
    console.log(`\nSimulated:\n${compareVariants(out.sim)}`);
  }
  if (out.real && out.sim) {
    out.agreement = agreement(out.real, out.sim);
    console.log(`\nMeasured and simulated, per run and metric:\n${agreementTable(out.agreement)}`);
    const { within, of } = withinTarget(out.agreement);
    console.log(`${within} of ${of} (total time, bytes, remote faults) within 15%`);
  }
  if (opts.json) {
    // one world: its report (with the clients' view of real runs); both: everything
    writeJson(
      opts.json,
      out.real && !out.sim ? { ...out.real, runs: out.runs } : out.sim && !out.real ? out.sim : out,
    );
    console.log(`report written to ${opts.json}`);
  }
  if (opts.html) {
    const report = out.real ?? out.sim!;
    const both = out.real && out.sim ? sideBySide(out.real, out.sim) : report;
    mkdirSync(dirname(opts.html), { recursive: true });
    const { renderHtml } = await import('../report/html.ts');
    writeText(opts.html, await renderHtml(both));
    console.log(`HTML report: ${opts.html}`);
  }
}

/** Bytes of the link's goodput measurement: about half a second at 1 Gbit/s. */
const GOODPUT_BYTES = 64 << 20;

interface Link {
  /** One TCP connection between the hosts (the lab only). */
  tcpMbps?: number;
  /** What that connection kept queued in its sender's uplink, µs (the lab only). */
  uplinkQueueUs?: number;
  /** An idle VM's precopy: bytes sent ÷ time after set-up. */
  migrationMbps: number;
  /** migrationMbps ÷ the line rate: the simulated link's efficiency. */
  efficiency: number;
  /** Hosts on loopback: only the migration is capped at the line rate. */
  loopback: boolean;
}

/** The share of the calibration VM's RAM that holds data. */
const CALIBRATION_DATA = 0.9;

async function runReal(
  config: PaperConfig,
  loopback: boolean,
): Promise<{ trials: TrialResult[]; link: Link }> {
  const shaped = !loopback && isRoot();
  let labDir: string | undefined;
  let cluster: Cluster;
  let tcpMbps: number | undefined;
  let uplinkQueueUs: number | undefined;
  /** The lab's two hosts, for a TCP transfer between them. */
  let ends: [LabEnd, LabEnd] | undefined;
  if (shaped) {
    labDir = mkdtempSync(join(tmpdir(), 'ferry-paper-'));
    console.log(
      `A lab: hosts pa and pb in network namespaces, links shaped to ${config.linkMbps} Mbit/s (tc tbf).`,
    );
    const lab = await startLab({
      hosts: ['pa', 'pb'],
      mbps: config.linkMbps,
      dir: labDir,
      subnet: '10.79.0',
      bridge: 'ferrypaper0',
    });
    cluster = lab;
    ends = [lab.hosts[0], lab.hosts[1]];
  } else {
    console.log(
      `Hosts on loopback${isRoot() ? '' : ' (not root: no shaped link)'}; pages capped at ${config.linkMbps} Mbit/s by the migration itself.`,
    );
    cluster = await startLoopback();
  }
  const trials: TrialResult[] = [];
  let link: Link;
  try {
    if (ends)
      ({ mbps: tcpMbps, queueUs: uplinkQueueUs } = await measureGoodput(ends[0], ends[1], GOODPUT_BYTES));
    // new hosts run their first migrations cold (postcopy's paths too, which the
    // calibration's precopies leave cold): the runs are meant to meet warm hosts
    await warmHosts(cluster);
    // the hosts' own pace per byte of data, once for all runs: an idle VM full of data,
    // by precopy (a page of zeros costs the hosts ~2 µs and the simulated link nothing:
    // a VM mostly of zeros would lower the simulated link for every byte of the runs)
    const dataMiB = Math.floor(config.ramMiB * CALIBRATION_DATA);
    const cal = await calibrateMigration(cluster, {
      ramMiB: config.ramMiB,
      vcpus: config.vcpus,
      dataMiB,
      maxBandwidthMbps: shaped ? undefined : config.linkMbps,
    });
    link = {
      tcpMbps,
      uplinkQueueUs,
      migrationMbps: cal.mbps,
      efficiency: fittedEfficiency(config, { dataMiB, setupMs: cal.setupMs, totalMs: cal.totalMs }, !shaped),
      loopback: !shaped,
    };
    console.log(
      `${tcpMbps !== undefined ? `One TCP connection from pa to pb: ${tcpMbps.toFixed(0)} Mbit/s, ${formatMs((uplinkQueueUs ?? 0) / 1000)} queued in pa's uplink. ` : ''}` +
        `An idle VM's precopy: ${formatMs(cal.totalMs)}, ${cal.mbps.toFixed(0)} Mbit/s after its set-up; ` +
        `its twin takes as long with the simulated link's efficiency at ${link.efficiency.toFixed(3)}.`,
    );
    for (const a of config.apps) {
      const picked = pickClient(a.app, a.client);
      if (picked.note) console.log(`(${picked.note})`);
      for (const v of config.variants) {
        const name = runName(a, v);
        process.stdout.write(`  ${name.padEnd(26)} `);
        const t = await runTrial({
          cluster,
          vm: a.app,
          app: a.app,
          ramMiB: config.ramMiB,
          vcpus: config.vcpus,
          mode: v.mode,
          cooperative: v.cooperative,
          client: picked.kind,
          connections: config.connections,
          fillMiB: config.fillMiB,
          maxBandwidthMbps: shaped ? undefined : config.linkMbps,
          warmupMs: config.warmupMs,
          afterMs: config.afterMs,
          variant: name,
        });
        const m = t.migration;
        console.log(
          `${m.outcome}, total ${formatMs(m.totalTimeMs)}, downtime ${formatMs(m.downtimeMs)}, ` +
            `${t.clients.requests} requests by ${t.clients.tool}, ${t.clients.errors} errors`,
        );
        if (t.probeError)
          console.log(`    (the destination's downlink queue went unmeasured: ${t.probeError})`);
        trials.push(t);
      }
    }
  } finally {
    await cluster.down();
    if (labDir) rmSync(labDir, { recursive: true, force: true });
  }
  return { trials, link };
}

function merged(scenario: string, world: 'real' | 'sim', trials: TrialResult[]): Report {
  return {
    scenario,
    seed: 0,
    world,
    migrations: trials.map((t) => t.migration),
    workloads: trials.map((t) => t.workload),
  };
}

/** Both worlds on one page: the simulated runs' variants are marked as such. */
function sideBySide(real: Report, sim: Report): Report {
  const tag = <T extends { variant: string }>(x: T): T => ({ ...x, variant: `${x.variant} (sim)` });
  return {
    scenario: 'paper: measured and simulated',
    seed: sim.seed,
    world: 'real',
    migrations: [...real.migrations, ...sim.migrations.map(tag)],
    workloads: [...real.workloads, ...sim.workloads.map(tag)],
  };
}

function dipTable(trials: TrialResult[]): string {
  const pct = (x: number) => `${Math.round(x * 100)}%`;
  const way = (r: RequestTimes | null) => (r ? formatMs(wayThroughHosts(r)) : '—');
  return table(
    [
      'run',
      'before (req/s)',
      'first 1 s',
      'lowest 100 ms',
      'back to 90%',
      'way through the hosts, before / postcopy',
      'downlink queue',
      'client errors',
      'connections lost',
    ],
    trials.map((t) => [
      t.migration.variant,
      Math.round(t.dip.baselineOpsPerSec).toLocaleString('en-US'),
      pct(t.dip.first1s),
      pct(t.dip.lowestBin),
      t.dip.recoveryMs >= 0 ? formatMs(t.dip.recoveryMs) : 'not in the run',
      `${way(t.requestTimes.baseline)} / ${way(t.requestTimes.postcopy)}`,
      t.downlinkQueueUs !== undefined ? formatMs(t.downlinkQueueUs / 1000) : '—',
      String(t.clients.errors),
      String(t.clients.connectionsLost),
    ]),
  );
}
