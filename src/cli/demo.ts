// `ferry demo`: the main job, for real. Two hosts and the virtual switch start on this
// machine, a VM boots with a key-value store (or a web server) full of data, clients load it
// through the switch, and the VM moves between the hosts while you watch. A summary and an
// HTML report follow; everything started is stopped again. `--sim` runs the simulated demo.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { MigrationMode } from '../engine/config.ts';
import { type ClientKind, pickClient } from '../lab/clients.ts';
import { startLoopback } from '../lab/loopback.ts';
import { runTrial, type TrialProgress, type TrialResult } from '../lab/trial.ts';
import { warmHosts } from '../lab/warmup.ts';
import { formatBytes, formatMs, table } from '../report/summary.ts';
import { simDemo } from './demo-sim.ts';
import { UsageError } from './errors.ts';
import { writeJson, writeText } from './io.ts';

export interface DemoOptions {
  sim?: boolean;
  mode: string;
  ram?: number;
  vcpus?: number;
  workload?: string;
  blocking?: boolean;
  client: string;
  maxBandwidth: number;
  /** Latency each host adds to its migration lanes (ms). */
  latency: number;
  /** Move a small VM there and back first (commander's --no-warm-up sets false). */
  warmUp: boolean;
  json?: string;
  html: string;
}

const MODES = ['precopy', 'postcopy', 'hybrid'];
const CLIENTS = ['auto', 'builtin', 'redis-benchmark', 'wrk'];

export async function demoCommand(opts: DemoOptions): Promise<void> {
  if (!MODES.includes(opts.mode))
    throw new UsageError(`--mode: '${opts.mode}' is not one of ${MODES.join(', ')}`);
  if (opts.sim && opts.latency > 0)
    throw new UsageError('--latency is for the real demo (the simulated hosts have links of their own)');
  if (opts.sim)
    return simDemo({
      mode: opts.mode,
      ram: opts.ram ?? 2048,
      vcpus: opts.vcpus ?? 4,
      workload: opts.workload ?? 'web',
      json: opts.json,
      html: opts.html,
    });
  const ram = opts.ram ?? 256;
  const vcpus = opts.vcpus ?? 2;
  const app = opts.workload ?? 'kv';
  if (!(Number.isInteger(ram) && ram >= 32 && ram <= 4096))
    throw new UsageError(`--ram: '${opts.ram}' must be a whole number of MiB from 32 to 4096`);
  if (!(Number.isInteger(vcpus) && vcpus >= 1 && vcpus <= 16))
    throw new UsageError(`--vcpus: '${opts.vcpus}' must be a whole number from 1 to 16`);
  if (app !== 'kv' && app !== 'http')
    throw new UsageError(
      `--workload: '${app}' is not one of kv, http (the simulator's are web, oltp, memtouch, idle: add --sim)`,
    );
  if (!CLIENTS.includes(opts.client))
    throw new UsageError(`--client: '${opts.client}' is not one of ${CLIENTS.join(', ')}`);
  if (!(opts.maxBandwidth > 0))
    throw new UsageError(`--max-bandwidth: '${opts.maxBandwidth}' must be > 0 Mbit/s`);
  const mode = opts.mode as MigrationMode;
  const cooperative = !opts.blocking;
  const picked = pickClient(app, opts.client as ClientKind | 'auto');
  const fillMiB = Math.max(4, Math.round(ram * 0.375));

  const cluster = await startLoopback({ laneLatencyMs: opts.latency });
  console.log(`A virtual switch and two hosts (a, b) run on this machine (their logs: ${cluster.dir}).`);
  const stop = () => void cluster.down().then(() => process.exit(130));
  process.once('SIGINT', stop);
  try {
    const faults = mode === 'precopy' ? '' : cooperative ? ', cooperative faults' : ', blocking faults';
    console.log(
      `VM vm1: ${ram} MiB, ${vcpus} vCPU${vcpus > 1 ? 's' : ''}, ${app === 'kv' ? 'key-value store' : 'web server'} ` +
        `with ${fillMiB} MiB of data; 16 connections of ${clientName(picked.kind, app)} through the switch.\n` +
        (picked.note ? `(${picked.note})\n` : '') +
        `It moves from a to b by ${mode}${faults}, pages capped at ${opts.maxBandwidth} Mbit/s` +
        (opts.latency > 0 ? `, the hosts ${2 * opts.latency} ms apart (round trip).\n` : '.\n'),
    );
    if (opts.warmUp) {
      console.log(
        'Warming the hosts: a 32 MiB VM there and back (a new host runs its first migrations cold)…',
      );
      await warmHosts(cluster);
    }
    const live = new LiveLine();
    const result = await runTrial({
      cluster,
      app,
      ramMiB: ram,
      vcpus,
      mode,
      cooperative,
      client: picked.kind,
      connections: 16,
      fillMiB,
      maxBandwidthMbps: opts.maxBandwidth,
      warmupMs: 3000,
      afterMs: 3000,
      variant: `${mode}${faults}`,
      onProgress: (p) => live.show(progressLine(p), p.migration?.phase ?? p.stage),
    });
    live.done();
    console.log(`\n${summary(result)}`);
    if (opts.json) {
      writeJson(opts.json, result.report);
      console.log(`report written to ${opts.json}`);
    }
    mkdirSync(dirname(opts.html), { recursive: true });
    const { renderHtml } = await import('../report/html.ts');
    writeText(opts.html, await renderHtml(result.report));
    console.log(`HTML report: ${opts.html}`);
    const m = result.migration;
    if (m.outcome !== 'completed' || !m.integrity.ok || result.clients.errors > 0) process.exitCode = 1;
  } finally {
    process.off('SIGINT', stop);
    await cluster.down();
  }
}

function clientName(kind: ClientKind, app: string): string {
  if (kind === 'builtin') return app === 'kv' ? 'the built-in RESP client' : 'the built-in HTTP client';
  return kind;
}

const BAR = 24;
function bar(fraction: number): string {
  const n = Math.round(Math.max(0, Math.min(1, fraction)) * BAR);
  return `[${'#'.repeat(n)}${'.'.repeat(BAR - n)}]`;
}

function progressLine(p: TrialProgress): string {
  const t = `t=${(p.elapsedMs / 1000).toFixed(1).padStart(5)} s`;
  const ops = `${Math.round(p.opsPerSec).toLocaleString('en-US').padStart(7)} requests/s`;
  const m = p.migration;
  // before its first page the migration is setting up (the destination boots, lanes connect)
  if (!m || m.bytesSent === 0)
    return `  ${t}  ${(m ? 'setting up' : p.stage).padEnd(11)} ${''.padEnd(BAR + 2 + 27)} ${ops}`;
  const done = m.pages > 0 ? 1 - m.pagesPending / m.pages : 0;
  return (
    `  ${t}  ${m.phase.padEnd(11)} ${bar(done)} ${(done * 100).toFixed(0).padStart(3)}% ` +
    `${formatBytes(m.bytesSent).padStart(9)} sent  ${ops}`
  );
}

/** Redraws one line on a terminal; elsewhere prints a line a second and at each new phase. */
class LiveLine {
  private last = 0;
  private lastKey = '';
  private drawn = false;
  show(text: string, key: string): void {
    if (process.stdout.isTTY) {
      process.stdout.write(`\r${text}`);
      this.drawn = true;
      return;
    }
    if (key === this.lastKey && performance.now() - this.last < 1000) return;
    this.last = performance.now();
    this.lastKey = key;
    console.log(text);
  }
  done(): void {
    if (this.drawn) process.stdout.write('\n');
  }
}

function summary(r: TrialResult): string {
  const m = r.migration;
  const c = r.clients;
  const pct = (x: number) => `${(x * 100).toFixed(0)}%`;
  const rows: string[][] = [
    ['outcome', m.outcome === 'completed' ? 'completed' : `${m.outcome}: ${m.reason}`],
    ['total time', formatMs(m.totalTimeMs)],
    ['downtime', formatMs(m.downtimeMs)],
    ['data sent', `${formatBytes(m.bytesSent)} in ${m.rounds} precopy round${m.rounds === 1 ? '' : 's'}`],
  ];
  if (m.mode !== 'precopy')
    rows.push([
      'remote faults',
      `${m.remoteFaults} (${m.asyncFaults} parked a task, ${m.syncFaults} blocked a vCPU); ` +
        `latency p50 ${(m.faultLatencyUs.p50 / 1000).toFixed(2)} ms, p99 ${(m.faultLatencyUs.p99 / 1000).toFixed(2)} ms`,
    ]);
  rows.push(
    ['throughput before', `${Math.round(r.dip.baselineOpsPerSec).toLocaleString('en-US')} requests/s`],
    ['first second after the switchover', pct(r.dip.first1s)],
    ['lowest 100 ms after it', pct(r.dip.lowestBin)],
    [
      'back to 90%',
      r.dip.recoveryMs >= 0 ? `${formatMs(r.dip.recoveryMs)} after the switchover` : 'not within the run',
    ],
    [
      'clients',
      `${c.requests.toLocaleString('en-US')} requests, ${c.errors} errors, ${c.connectionsLost} connections lost` +
        (c.firstError ? ` (first error: ${c.firstError})` : ''),
    ],
    [
      'integrity',
      m.integrity.checked ? (m.integrity.ok ? 'RAM checksums equal' : 'RAM checksums DIFFER') : 'not checked',
    ],
  );
  return table(['', ''], rows);
}
